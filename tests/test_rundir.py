"""A run's --output_dir: never two runs mixed in it, one run at a time, and logs a person can read."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_script
from conftest import LOSS_TERMS, ToyDataset, ToyModel, collate, interrupted_run, make_args, max_diff, params, run
from visualbert import engine, rundir
from visualbert.features import get_layout
from visualbert.plot import read_metrics

# lines third-party code printed at every command before visualbert.quiet
NOISE = ("No ccache found", "Setuptools is replacing distutils", "OMP_NUM_THREADS", "PyTorch version",
         "[    INFO]", "Traceback")


def metric_steps(out):
    return [r["step"] for r in read_metrics(out) if "loss" in r]


def test_second_run_into_a_used_dir_is_refused_and_changes_nothing(tmp_path):
    _, args = run(tmp_path, "out", save_steps=4)
    before = mtimes(args.output_dir)
    with pytest.raises(SystemExit, match=r"already holds a training run .*--resume latest.*--overwrite_output_dir"):
        run(tmp_path, "out", save_steps=4, learning_rate=0.01)
    assert mtimes(args.output_dir) == before


def mtimes(directory):
    """Every file's modification time, the lock file (which names its last holder) aside."""
    return {os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
            for root, _, names in os.walk(directory) for name in names if name != rundir.LOCK_FILE}


@pytest.mark.slow
def test_scripts_refuse_a_used_dir_before_loading_any_data(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    # the data does not even exist: the output dir is refused first
    proc = run_script(["VQA2/run_vqa2.py", "--input_dir", str(tmp_path / "missing"), "--output_dir", str(used),
                       "--device", "cpu"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {used} already holds a training run (metrics.jsonl); pass "
                                                "--resume latest to continue it, --overwrite_output_dir to delete it "
                                                "and start over, or another --output_dir"]


def test_overwrite_output_dir_deletes_the_old_run_only(tmp_path):
    _, args = run(tmp_path, "out", save_steps=2, save_total_limit=0)
    # files that are not a run's outputs: the launcher's log, a prediction written next to the run
    for name in ("workerlog.0", "result.json"):
        (tmp_path / "out" / name).write_text("keep me")
    fresh, _ = run(tmp_path, "fresh", max_steps=3, save_steps=2)
    again, args = run(tmp_path, "out", max_steps=3, save_steps=2, overwrite_output_dir=True)
    assert max_diff(params(fresh), params(again)) == 0.0
    assert metric_steps(args.output_dir) == [1, 2, 3]
    assert [os.path.basename(c) for c in engine.list_checkpoints(args.output_dir)] == ["checkpoint-2", "checkpoint-3"]
    for name in ("workerlog.0", "result.json"):
        assert (tmp_path / "out" / name).read_text() == "keep me"


def test_resume_with_other_settings_is_refused_in_one_line(tmp_path, monkeypatch):
    out = interrupted_run(tmp_path, monkeypatch, "out")
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "out", save_steps=4, resume="latest", learning_rate=0.1, gradient_accumulation_steps=2)
    message = str(e.value)
    assert "\n" not in message and message.startswith("error: --resume: training settings differ")
    assert "learning_rate 0.05 -> 0.1" in message and "gradient_accumulation_steps 1 -> 2" in message
    # what may change on resume (logging, saving, workers) does not count
    straight, _ = run(tmp_path, "straight", save_steps=4)
    resumed, _ = run(tmp_path, "out", save_steps=2, logging_steps=3, resume="latest")
    assert max_diff(params(straight), params(resumed)) <= 1e-6
    assert metric_steps(out) == [1, 2, 3, 4, 6, 9]


def test_allow_changed_settings_continues_and_records_the_changes(tmp_path, monkeypatch):
    out = interrupted_run(tmp_path, monkeypatch, "out")
    run(tmp_path, "out", save_steps=4, resume="latest", learning_rate=0.1, allow_changed_settings=True)
    config = json.loads((out / "run_config.json").read_text())
    assert config["learning_rate"] == 0.1
    assert config["setting_changes"] == [{"resume": "latest", "changes": {"learning_rate": [0.05, 0.1]}}]
    assert metric_steps(out) == list(range(1, 10))


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="pass one of them"):
        run(tmp_path, "out", resume="latest", overwrite_output_dir=True)


def test_nonfinite_loss_found_at_a_save_step_between_log_lines(tmp_path):
    """Losses are read once per logging step, but always before a checkpoint is written: the run
    stops at the first save after the loss went non-finite and names the step where it did."""
    args = make_args(tmp_path, "nan", save_steps=1, logging_steps=100, learning_rate=1e30, max_grad_norm=0.0)
    with pytest.raises(SystemExit, match=r"non-finite loss at step 2 \(epoch 0\).*checkpoint-1$"):
        engine.train(args, ToyModel(), ToyDataset(), collate, LOSS_TERMS)
    assert [os.path.basename(c) for c in engine.list_checkpoints(args.output_dir)] == ["checkpoint-1"]


# a run that holds the output dir until told to go on: its dataset waits for a file to appear
HOLDER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from conftest import LOSS_TERMS, ToyDataset, ToyModel, collate, make_args
from visualbert import engine
import pathlib

class Waiting(ToyDataset):
    def __getitem__(self, i):
        while not os.path.exists({go!r}):
            time.sleep(0.05)
        return super().__getitem__(i)

engine.train(make_args(pathlib.Path({tmp!r}), "out", max_steps=1), ToyModel(), Waiting(), collate, LOSS_TERMS)
"""


def start_holder(tmp_path):
    go = tmp_path / "go"
    code = HOLDER.format(tests=os.path.join(ROOT, "tests"), go=str(go), tmp=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out" / rundir.LOCK_FILE
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    return proc, go


@pytest.mark.slow
def test_a_second_run_while_the_first_is_alive_is_refused_naming_its_pid(tmp_path):
    proc, go = start_holder(tmp_path)
    try:
        with pytest.raises(SystemExit, match=rf"in use by another training run \(pid {proc.pid}\)"):
            run(tmp_path, "out", max_steps=1, resume="latest")
    finally:
        go.write_text("")
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert metric_steps(tmp_path / "out") == [1]  # the refused run wrote nothing


@pytest.mark.slow
def test_the_lock_dies_with_its_process(tmp_path):
    proc, _ = start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # no stale lock: the dir is free again (its run, killed before its first checkpoint, starts over)
    run(tmp_path, "out", max_steps=1, resume="latest")
    assert metric_steps(tmp_path / "out") == [1]


@pytest.mark.slow
def test_commands_print_no_third_party_noise(tmp_path):
    env = {"OMP_NUM_THREADS": "2"}  # Paddle warns about any value above 1
    for command in (["run_pretrain.py", "--help"], ["VQA2/run_predict.py", "--help"], ["NLVR2/run_nlvr2.py", "--help"]):
        proc = run_script(command, env=env)
        assert proc.stderr == "", (command, proc.stderr)
    fixture = os.path.join(ROOT, "tests", "fixtures", "hf", "vqa")
    proc = run_script(["-m", "visualbert.convert", "--src", fixture, "--dst", str(tmp_path / "converted")], env=env)
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [f"wrote {tmp_path / 'converted'} (VisualBertForQuestionAnswering, 45 tensors) "
                                        f"from {fixture}"]


@pytest.mark.slow
def test_logs_under_the_launcher_are_lines_not_bars(demo_dir, tiny_config, tmp_path):
    """vqa-finetune.sh (paddle.distributed.launch, output not a terminal): one line per logging step,
    evaluation progress and results on lines of their own, no bar refreshes, no third-party noise."""
    out = tmp_path / "vqa"
    steps, logging_steps = 6, 2
    proc = subprocess.run(
        ["sh", "vqa-finetune.sh", "--model_name_or_path", tiny_config(0.0), "--batch_size", "32",
         "--max_steps", str(steps), "--logging_steps", str(logging_steps), "--eval_steps", "3",
         "--eval_split", "val", "--device", "cpu", "--num_workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", DATA_DIR=str(demo_dir / "X_COCO"), LOG_DIR=str(out)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "\r" not in text and not [n for n in NOISE if n in text]
    lines = [l for l in text.splitlines() if not l.startswith(("LAUNCH", "note: no CUDA GPU"))]
    train = [l for l in lines if l.startswith("train: ")]
    assert len(train) == math.ceil(steps / logging_steps)
    assert re.fullmatch(r"train: step 2/6  loss \S+  lr \S+  samples_per_s \S+  elapsed \d+:\d\d  left \d+:\d\d",
                        train[0]), train[0]
    evals = [r for r in read_metrics(out) if "eval_vqa_accuracy" in r]
    assert [l for l in lines if l.startswith("eval at step")] == [
        f"eval at step {r['step']}: vqa_accuracy {r['eval_vqa_accuracy']:.4g}" for r in evals]
    progress = [l for l in lines if l.startswith("vqa predict: batch ")]
    assert progress[-1].startswith("vqa predict: batch 15/15") and len(progress) <= 2 * (engine.PREDICT_LINES + 1)
    features = [l for l in lines if l.startswith("features: ")]
    root = get_layout("coco_detectron_fix_100").root_dir(str(demo_dir / "X_COCO"))
    assert features == [f"features: coco_detectron_fix_100 from per-image .npy files under {root} (no packed store; "
                        "`python -m visualbert.features pack` makes one)"]
    known = ("training: ", "train: ", "eval at step", "vqa predict: ", "features: ", "done: ")
    assert [l for l in lines if not l.startswith(known)] == []
