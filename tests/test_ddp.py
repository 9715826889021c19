"""Data parallelism with 2 gloo processes on the toy run (tests/ddp_toy.py): each rank's own random
state across a resume, resuming when ranks do not share a filesystem, a rank without loss targets."""
import os
import shutil

import numpy as np
import pytest

from conftest import run_script

pytestmark = pytest.mark.slow  # each test launches several 2-process runs


def launch(result_dir, *flags, check=True):
    proc = run_script(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                       str(result_dir / "launch"), "tests/ddp_toy.py", str(result_dir), *flags], check=False,
                      timeout=240)
    logs = "".join(open(os.path.join(result_dir, "launch", f"workerlog.{r}")).read() for r in (0, 1)
                   if os.path.exists(os.path.join(result_dir, "launch", f"workerlog.{r}")))
    if check and proc.returncode != 0:
        raise AssertionError(f"launch exited {proc.returncode}:\n{proc.stderr[-2000:]}\n{logs[-4000:]}")
    return proc, logs


def params(result_dir, rank):
    with np.load(result_dir / f"params_rank{rank}.npz") as f:
        return {k: f[k] for k in f.files}


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_resume_on_nodes_without_a_shared_filesystem_is_exact(tmp_path):
    """Rank 0 chooses the checkpoint and every rank reads that path; ranks keep their own dropout
    streams across the resume (rank 1 restoring rank 0's generator would change its masks)."""
    common = ["--node_dirs", "--dropout", "0.3"]
    launch(tmp_path / "straight", *common)
    nodes = tmp_path / "interrupted"
    launch(nodes, *common, "--stop_after_save", "1")  # both ranks stop right after checkpoint-4
    saved = nodes / "node0" / "run" / "checkpoint-4"
    assert sorted(n for n in os.listdir(saved) if n.startswith("rng_state")) == [
        "rng_state_rank0.pdparams", "rng_state_rank1.pdparams"]
    assert not (nodes / "node1" / "run" / "checkpoint-4").exists()  # rank 1's "disk" never got it

    # rank 1 cannot read what rank 0 chose: every rank stops with one line, none hangs
    proc, logs = launch(nodes, *common, "--resume", "latest", check=False)
    assert proc.returncode != 0
    line = "error: --resume latest: rank 0 chose run/checkpoint-4, which rank 1 cannot read"
    assert line in logs and "every node needs that checkpoint at the same path" in logs
    assert logs.count(line) == 2  # both ranks end with it

    # with a copy on rank 1's node the resumed run equals the uninterrupted one
    shutil.copytree(saved, nodes / "node1" / "run" / "checkpoint-4")
    launch(nodes, *common, "--resume", "latest")
    for rank in (0, 1):
        assert max_diff(params(tmp_path / "straight", rank), params(nodes, rank)) <= 1e-6


def test_a_rank_without_loss_targets_neither_hangs_nor_drifts(tmp_path):
    """A rank whose batches hold no unit of any loss term makes no gradient at all; the all-reduce
    still takes the same parameter list on every rank (zeros for it)."""
    launch(tmp_path, "--no_targets_on_rank", "1", "--save_steps", "100")
    zero, one = params(tmp_path, 0), params(tmp_path, 1)
    assert max_diff(zero, one) == 0.0  # the same step on both ranks, every step
