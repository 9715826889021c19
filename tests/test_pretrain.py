"""run_pretrain.py end to end on the demo data: exact resume after SIGKILL, data parallel, CLI errors."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from conftest import ROOT, run_script
from visualbert.plot import read_metrics

pytestmark = pytest.mark.slow  # every test here runs the scripts end to end


def pretrain_args(demo_dir, out, config, *extra):
    return ["run_pretrain.py", "--input_dir", str(demo_dir / "X_COCO"), "--output_dir", str(out),
            "--dataset", "coco_captions", "--model_name_or_path", config, "--device", "cpu",
            "--num_workers", "0", "--eval_split", "none", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--max_regions", "4", *extra]


def load_params(run_dir, sub="model"):
    return paddle.load(os.path.join(run_dir, sub, "model_state.pdparams"))


def max_param_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a)


def test_sigkill_then_resume_matches_uninterrupted_run(demo_dir, tiny_config, tmp_path):
    config = tiny_config(dropout=0.1)  # dropout on: the RNG state must be restored too
    common = ["--train_batch_size", "8", "--max_steps", "24", "--save_steps", "6"]
    run_script(pretrain_args(demo_dir, tmp_path / "straight", config, *common))

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable] + pretrain_args(demo_dir, out, config, *common), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoint-6" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoint-24").exists(), "killed too late to test anything"

    run_script(pretrain_args(demo_dir, out, config, *common, "--resume", "latest"))
    assert max_param_diff(load_params(tmp_path / "straight"), load_params(out)) <= 1e-6
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == list(range(1, 25))


def test_data_parallel_matches_single_process(demo_dir, tiny_config, tmp_path):
    config = tiny_config(dropout=0.0)
    steps = ["--max_steps", "6"]
    run_script(pretrain_args(demo_dir, tmp_path / "single", config, "--train_batch_size", "8", *steps))
    run_script(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "launch"),
                *pretrain_args(demo_dir, tmp_path / "ddp", config, "--train_batch_size", "4", *steps)])
    assert max_param_diff(load_params(tmp_path / "single"), load_params(tmp_path / "ddp")) <= 1e-5
    drift = [r["rank_param_drift"] for r in read_metrics(tmp_path / "ddp") if "rank_param_drift" in r]
    assert drift == [0.0]  # both ranks hold identical parameters


def test_bad_inputs_fail_with_one_line(demo_dir, tiny_config, tmp_path):
    config = tiny_config()
    # features of the wrong dimension for a checkpoint: 1024-dim COCO features, 2048-dim model
    model_dir = tmp_path / "m2048"
    run_script(pretrain_args(demo_dir, model_dir, config, "--max_steps", "1", "--train_batch_size", "4"))
    proc = run_script(pretrain_args(demo_dir, tmp_path / "x", str(model_dir), "--image_feature_type",
                                    "coco_detectron_fix_144", "--max_steps", "1"), check=False)
    assert proc.returncode != 0
    assert "expects 2048-dim region features, but the features have 1024" in proc.stderr.strip().splitlines()[-1]
    # an annotation dir without the split
    proc = run_script(pretrain_args(demo_dir, tmp_path / "y", config, "--annotation_dir", str(tmp_path)), check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr
