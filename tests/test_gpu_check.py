"""benchmarks/gpu_check.sh reports every check, failed ones as failed (never retried), and
benchmarks/gpu.sh retries a smaller batch only when the GPU ran out of memory. A fake interpreter
stands in for Paddle here; the checks' own comparisons are tested on small files."""
import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check  # noqa: E402

FAKE_PYTHON = """#!/bin/sh
# logs each call; fails the way $FAIL_WITH says when its arguments contain $FAIL_ON
echo "$*" >> "$LOG"
case "$*" in *"$FAIL_ON"*) echo "$FAIL_WITH" >&2; exit 1 ;; esac
exit 0
"""


def run(tmp_path, command, fail_on, fail_with="RuntimeError: a kernel failed"):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls"
    env = dict(os.environ, PYTHON=str(fake), LOG=str(log), FAIL_ON=fail_on, FAIL_WITH=fail_with, DEVICE="cpu",
               OUT=str(tmp_path / "out"))
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_a_failing_check_is_reported_and_the_others_still_run(tmp_path):
    proc, calls = run(tmp_path, ["bash", "benchmarks/gpu_check.sh"], fail_on="gpu_check.py attention")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    status = {l.split()[0]: l.split()[1] for l in lines if l.split()[1:2] in (["PASS"], ["FAIL"])}
    assert status == {"run_check": "PASS", "attention": "FAIL", "demo_data": "PASS", "amp_fp16_resume": "PASS",
                      "amp_bf16_with_eval": "PASS", "fp32_with_eval": "PASS", "predict_fp32": "PASS",
                      "predict_amp": "PASS", "predict_agree": "PASS", "extract_amp": "PASS", "throughput": "PASS"}
    assert [c for c in calls if "attention" in c] == ["benchmarks/gpu_check.py attention --device cpu"]  # once
    assert "RuntimeError: a kernel failed" in (tmp_path / "out" / "attention.log").read_text()
    assert lines[-1] == f"gpu_check: 1 check(s) FAILED; each one's output is in {tmp_path / 'out'}/<check>.log"


def test_gpu_sh_retries_only_out_of_memory(tmp_path):
    proc, calls = run(tmp_path, ["bash", "benchmarks/gpu.sh", str(tmp_path / "b.json"), "--device", "cpu"],
                      fail_on="mfu", fail_with="RuntimeError: flash attention: invalid mask shape")
    assert proc.returncode == 1 and len(calls) == 1  # not retried as if it had run out of memory
    assert "batch 128 failed (not out of memory; see the error above)" in proc.stderr
    (tmp_path / "oom").mkdir()
    proc, calls = run(tmp_path / "oom", ["bash", "benchmarks/gpu.sh", str(tmp_path / "b.json"), "--device", "cpu"],
                      fail_on="--batch 128", fail_with="ResourceExhaustedError: Out of memory error on GPU 0")
    assert proc.returncode == 0 and "ran out of GPU memory; trying a smaller one" in proc.stderr
    assert [c.split("--batch ")[1].split()[0] for c in calls] == ["128", "64"]


def test_comparisons(tmp_path, capsys):
    answers = [{"question_id": i, "answer": "yes"} for i in range(20)]
    (tmp_path / "a.json").write_text(json.dumps(answers))
    answers[0]["answer"] = "no"
    (tmp_path / "b.json").write_text(json.dumps(answers))
    assert gpu_check.main(["same_answers", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0  # 95%
    assert gpu_check.main(["same_answers", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                           "--min_agreement", "0.99"]) == 1
    import paddle

    for name, shift in (("x", 0.0), ("y", 1e-6), ("z", 1e-3)):
        os.makedirs(tmp_path / name / "model")
        paddle.save({"w": paddle.to_tensor(np.ones(3, "float32") + shift)},
                    str(tmp_path / name / "model" / "model_state.pdparams"))
    assert gpu_check.main(["same_params", str(tmp_path / "x"), str(tmp_path / "y")]) == 0
    assert gpu_check.main(["same_params", str(tmp_path / "x"), str(tmp_path / "z")]) == 1
    assert "largest parameter difference 0.001" in capsys.readouterr().out
