"""visualbert.environment on its own: the device, the seeds, and the output checks made before any work."""
import argparse
import os
import random
import subprocess
import sys

import numpy as np
import paddle
import pytest

from visualbert import environment, rundir


def args(**kw):
    defaults = dict(device="cpu", use_amp=False, seed=0, output_dir=None, output=None, resume=None,
                    overwrite_output_dir=False)
    return argparse.Namespace(**dict(defaults, **kw))


def test_the_seed_fixes_paddle_numpy_and_python(tmp_path):
    def draws():
        return paddle.rand([3]).numpy().tolist(), np.random.rand(), random.random()

    environment.setup_device(args(seed=5))
    first = draws()
    environment.set_seed(5)
    assert draws() == first
    environment.set_seed(6)
    assert draws() != first


def test_device_cpu_and_amp_falls_back_with_a_note(capsys):
    a = args(use_amp=True)
    assert environment.setup_device(a) == "cpu" and paddle.get_device() == "cpu"
    assert a.use_amp is False and "AMP needs a GPU" in capsys.readouterr().out


def test_device_gpu_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: False)
    with pytest.raises(SystemExit, match="^error: --device gpu, but this paddle build has no CUDA"):
        environment.setup_device(args(device="gpu"))


@pytest.mark.parametrize("flag,make,message", [
    ("output_dir", lambda p: p.write_text("x"), "is a file; expected a directory"),
    ("output", lambda p: p.mkdir(), "is a directory; expected a file path"),
])
def test_an_output_of_the_wrong_kind_is_refused_before_any_work(tmp_path, flag, make, message):
    make(tmp_path / "out")
    with pytest.raises(SystemExit, match=message):
        environment.check_output_paths(args(**{flag: str(tmp_path / "out")}))


def test_an_output_below_a_file_or_equal_to_an_input_is_refused_and_nothing_is_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a directory"):
        environment.check_output_paths(args(output_dir=str(tmp_path / "file" / "run")))
    questions = tmp_path / "q.json"
    questions.write_text("{}")
    with pytest.raises(SystemExit, match=r"--output .*q.json is the --questions input"):
        environment.check_output_paths(args(output=str(questions), questions=str(questions)))
    environment.check_output_paths(args(output_dir=str(tmp_path / "new" / "run")))  # fine, and creates nothing
    assert not (tmp_path / "new").exists()


def test_overwriting_a_run_may_not_replace_an_input_read_from_it(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    inputs = [("--model_name_or_path", str(run / "best"))]
    with pytest.raises(ValueError, match="its best would be replaced"):
        environment.check_not_input("--output_dir", str(run), inputs, replaced=rundir.RUN_OUTPUTS)
    environment.check_not_input("--output_dir", str(run), inputs)  # without --overwrite_output_dir nothing is replaced
    for protected in (os.path.sep, os.path.expanduser("~")):
        with pytest.raises(ValueError, match="pick a directory of its own"):
            environment.check_not_input("--output_dir", protected, [])


def test_an_output_dir_locked_by_another_run_is_refused_at_setup(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from visualbert import rundir; "
                               "rundir.OutputDirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as e:
            environment.setup_device(args(output_dir=str(run)))
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    environment.setup_device(args(output_dir=str(run)))  # free again once the other run is gone


def test_own_output_dir_writes_the_run_files_and_holds_the_lock_for_the_run(tmp_path):
    run = tmp_path / "run"
    a = args(output_dir=str(run), allow_changed_settings=False)
    with environment.own_output_dir(a, {"seed": 0}, {"notes.txt": lambda path: open(path, "w").write("hi")}):
        assert (run / "notes.txt").read_text() == "hi"
        probe = subprocess.run([sys.executable, "-c", "import sys; from visualbert import rundir; "
                                "rundir.OutputDirLock(sys.argv[1]).acquire()", str(run)], capture_output=True, text=True)
        assert probe.returncode != 0  # another process cannot take it meanwhile
    probe = subprocess.run([sys.executable, "-c", "import sys; from visualbert import rundir; "
                            "rundir.OutputDirLock(sys.argv[1]).acquire()", str(run)], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr  # released afterwards
