"""No process of a command outlives it: SIGKILL of a training run takes its loader workers with it and
frees its --output_dir for --resume; Ctrl-C ends extract and prediction in one line with status 130;
a finished run stops its workers without Paddle's noise."""
import functools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from visualbert import PredictionArguments, TaskArguments, TrainingArguments, tasks
from visualbert.safeload import load_paddle

TESTS = os.path.join(ROOT, "tests")


def group_members(pgid):
    """Live processes (not zombies) of the process group ``pgid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # ended while we looked
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            alive.append(int(entry))
    return alive


def wait_until_gone(pgid, seconds):
    deadline = time.time() + seconds
    while group_members(pgid) and time.time() < deadline:
        time.sleep(0.1)
    return group_members(pgid)


# the engine's toy run with two loader workers; SLOW makes each sample take a while
TOY_RUN = """
import os, sys, time, pathlib
sys.path.insert(0, {tests!r})
from conftest import LOSS_TERMS, ToyDataset, ToyModel, collate, make_args
from visualbert import engine, environment

class Slow(ToyDataset):
    def __getitem__(self, i):
        if os.environ.get("SLOW"):
            time.sleep(0.05)
        return super().__getitem__(i)

args = make_args(pathlib.Path({tmp!r}), {name!r}, num_workers=2, save_steps=1, resume={resume!r})
environment.set_seed(args.seed)
engine.train(args, ToyModel(), Slow(), collate, LOSS_TERMS)
"""


def toy_command(tmp_path, name, resume=None):
    code = TOY_RUN.format(tests=TESTS, tmp=str(tmp_path), name=name, resume=resume)
    return [sys.executable, "-c", code]


def toy_env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, **extra)


@pytest.mark.slow
def test_sigkill_takes_the_loader_workers_along_and_resume_equals_an_uninterrupted_run(tmp_path):
    log = tmp_path / "killed.log"  # not a pipe: a worker left alive would keep it open and hang the test
    with open(log, "w") as out:
        proc = subprocess.Popen(toy_command(tmp_path, "run"), env=toy_env(SLOW="1"), start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    checkpoint = tmp_path / "run" / "checkpoint-2"
    deadline = time.time() + 120
    while not checkpoint.exists():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "no checkpoint-2 in time"
        time.sleep(0.05)
    assert len(group_members(proc.pid)) >= 3  # the run and its two workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = wait_until_gone(proc.pid, 5)
    for pid in left:  # fail, but leave nothing behind
        os.kill(pid, signal.SIGKILL)
    assert left == []
    resumed = subprocess.run(toy_command(tmp_path, "run", resume="latest"), env=toy_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run(toy_command(tmp_path, "whole"), env=toy_env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    ours = load_paddle(tmp_path / "run" / "model" / "model_state.pdparams")
    theirs = load_paddle(tmp_path / "whole" / "model" / "model_state.pdparams")
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


@pytest.mark.slow
def test_a_finished_run_stops_its_workers_without_noise(tmp_path):
    """max_steps ends the run mid-epoch, with batches still queued in the workers."""
    code = TOY_RUN.format(tests=TESTS, tmp=str(tmp_path), name="short", resume=None).replace(
        "save_steps=1,", "save_steps=1, max_steps=2,")
    proc = subprocess.run([sys.executable, "-c", code], env=toy_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in ("exit unexpectedly", "FatalError", "Termination signal", "C++ Traceback", "Traceback"):
        assert noise not in proc.stderr + proc.stdout, proc.stderr[-3000:]


# ---------------------------------------------------------------------------- Ctrl-C


EXTRACT = """
import sys, time
from visualbert import extract as E
grid = E.Backbone.grid
E.Backbone.grid = lambda self, fmap, n: (time.sleep(0.3), grid(self, fmap, n))[1]
sys.exit(E.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_of_extract_with_decoding_workers_is_one_line_and_leaves_no_worker(tmp_path, attempt):
    rng = np.random.default_rng(attempt)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    out = tmp_path / "feats"
    log = tmp_path / "extract.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", EXTRACT, "--image_dir", str(images), "--output_dir", str(out),
                                 "--backbone", "patches", "--image_size", "32", "--batch_size", "1",
                                 "--num_workers", "2"], cwd=ROOT, env=toy_env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    progress = out.parent / "feats.partial" / "progress.jsonl"
    deadline = time.time() + 60
    while not (progress.exists() and progress.stat().st_size > 0):
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "extract never started writing"
        time.sleep(0.05)
    time.sleep(0.2 * attempt)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the whole foreground group
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("extract hung after Ctrl-C")
    left = wait_until_gone(proc.pid, 5)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    stderr = log.read_text()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == (f"stopped: interrupted (SIGINT); {out}.partial is kept: rerun the same "
                                       "command to resume")
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert left == []
    assert not out.exists()


def test_ctrl_c_of_prediction_is_one_line_and_status_130(monkeypatch, capsys):
    prediction = PredictionArguments(batch_size=2, num_workers=0, output="result.json")

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal arrives first

    monkeypatch.setattr(tasks, "load_for_prediction", lambda task, args, prediction: (None, None))
    monkeypatch.setattr(tasks, "vqa_predict", interrupted)
    with pytest.raises(SystemExit) as e:
        tasks.predict("vqa2", TaskArguments(), prediction)
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "stopped: interrupted (SIGINT); result.json was not written"


def test_a_worker_stopped_with_sigterm_prints_no_paddle_traceback():
    """The data loader's workers are forked from a process that ran Paddle operators, and inherit its
    SIGTERM handler, which prints a C++ traceback; stopping them at the end of a run must not."""
    code = ("import os, signal, time, paddle\n"
            "paddle.to_tensor([1.0]) * 2\n"
            "from visualbert.lifetime import init_worker\n"
            "init_worker(os.getppid())\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(5)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=toy_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGTERM
    assert "C++ Traceback" not in proc.stderr and "FatalError" not in proc.stderr, proc.stderr[-2000:]


def _interrupt(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the signal arrives first


@pytest.mark.parametrize("command", ["features pack", "convert", "fine-tuning", "pretraining"])
def test_ctrl_c_of_the_other_commands_is_one_line_and_status_130(command, monkeypatch, capsys, tmp_path):
    """Ctrl-C while a command loads its data, model or files (the training loop has its own line)."""
    if command in ("fine-tuning", "pretraining"):
        monkeypatch.setattr(tasks.environment, "setup_device", _interrupt)
        main = tasks.pretrain if command == "pretraining" else functools.partial(tasks.finetune, "vqa2")
        main = functools.partial(main, TaskArguments(dataset="vqa2"))
        argv = TrainingArguments(output_dir=str(tmp_path / "run"))
    elif command == "convert":
        from visualbert import convert

        monkeypatch.setattr(convert, "convert", _interrupt)
        main, argv = convert.main, ["--src", str(tmp_path), "--dst", str(tmp_path / "out")]
    else:
        from visualbert.features import __main__ as features_cli

        monkeypatch.setattr(features_cli, "pack_features", _interrupt)
        main, argv = features_cli.main, ["pack", "--image_feature_type", "coco_detectron_fix_100", "--input_dir",
                                         str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "stopped: interrupted (SIGINT)"


@pytest.mark.slow
def test_a_second_extract_into_an_output_being_written_says_it_is_in_use(tmp_path, capsys):
    from visualbert import extract as E

    images = tmp_path / "images"
    images.mkdir()
    for i in range(20):
        Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(images / f"{i:02d}.png")
    out = tmp_path / "feats"
    argv = ["--image_dir", str(images), "--output_dir", str(out), "--backbone", "patches", "--image_size", "32",
            "--batch_size", "1", "--num_workers", "0"]
    first = subprocess.Popen([sys.executable, "-c", EXTRACT] + argv, cwd=ROOT, env=toy_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        progress = tmp_path / "feats.partial" / "progress.jsonl"
        deadline = time.time() + 60
        while not (progress.exists() and progress.stat().st_size > 0):
            assert first.poll() is None and time.time() < deadline, "the first extract never started writing"
            time.sleep(0.05)
        capsys.readouterr()
        assert E.main(argv) == 1
        assert capsys.readouterr().err.strip() == (f"error: {out}: in use: another run (pid {first.pid}) is writing "
                                                   "it; wait for it to end or pick another output")
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.kill()
        first.wait()
