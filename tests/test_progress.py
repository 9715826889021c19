"""visualbert.progress: what a person sees of a long job in a log file (no terminal)."""
import re
import subprocess
import sys

import pytest

from visualbert import progress


@pytest.fixture
def clock(monkeypatch):
    """A clock the test moves by hand."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    return now


def test_log_file_gets_one_line_per_show_with_elapsed_and_time_left(clock, capsys):
    bar = progress.Progress("train", "step", total=10)
    assert bar.bar is None  # stderr is captured, not a terminal
    clock[0] += 30
    bar.update(3)
    bar.show(3, {"loss": "1.25"})
    err = capsys.readouterr().err
    # 3 of 10 steps in 30 s: 70 s left
    assert err == "train: step 3/10  loss 1.25  elapsed 0:30  left 1:10\n"


def test_log_lines_are_spaced_by_at_most_every(clock, capsys):
    bar = progress.Progress("predict", "batch", total=100)
    for step in range(1, 101):
        clock[0] += 1
        bar.update()
        bar.show(step, at_most_every=30)
    lines = capsys.readouterr().err.splitlines()
    assert [int(re.search(r"batch (\d+)/100", line).group(1)) for line in lines] == [30, 60, 90]


def test_resumed_progress_estimates_from_the_steps_done_here(clock, capsys):
    bar = progress.Progress("train", "step", total=100, initial=50)  # resumed at step 50
    clock[0] += 10
    bar.update(10)
    bar.show(60)
    assert "elapsed 0:10  left 0:40" in capsys.readouterr().err  # 10 s per 10 steps, 40 steps to go


def test_hours_in_the_clock(clock, capsys):
    bar = progress.Progress("train", "step", total=2)
    clock[0] += 3723
    bar.update()
    bar.show(1)
    assert "elapsed 1:02:03  left 1:02:03" in capsys.readouterr().err


def test_only_rank_0_prints(clock, capsys, monkeypatch):
    monkeypatch.setattr(progress, "_is_main", lambda: False)
    bar = progress.Progress("train", "step", total=2)
    bar.update()
    bar.show(1)
    bar.write("eval at step 1: accuracy 1")
    assert capsys.readouterr() == ("", "")


def test_write_is_a_line_of_its_own_on_stdout(capsys):
    bar = progress.Progress("train", "step", total=2)
    bar.write("eval at step 1: vqa_accuracy 0.5")
    assert capsys.readouterr().out == "eval at step 1: vqa_accuracy 0.5\n"


def test_a_terminal_gets_a_bar_and_no_log_lines(clock, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress.Progress("train", "step", total=4)
    assert bar.bar is not None
    bar.update(2)
    bar.show(2, {"loss": "0.5"})
    bar.close()
    assert "train: step" not in capsys.readouterr().err  # the bar's own rendering, not the log line


def test_track_in_a_log_writes_a_line_per_interval_and_one_at_the_end(clock, capsys):
    seen = []
    for item in progress.track(range(10), "pack x", "img", every=30):
        clock[0] += 10  # 10 s per item: a line after items 3, 6 and 9, then the last one
        seen.append(item)
    assert seen == list(range(10))
    lines = capsys.readouterr().err.splitlines()
    assert [re.match(r"pack x: img (\d+)/10  elapsed", line).group(1) for line in lines] == ["3", "6", "9", "10"]


def test_track_of_a_short_job_writes_nothing_and_disabled_writes_nothing(clock, capsys):
    assert list(progress.track([1, 2], "pack x", "img")) == [1, 2]
    assert list(progress.track(iter(range(50)), "import x", "img", enabled=False, every=0)) == list(range(50))
    assert capsys.readouterr().err == ""


def test_track_of_a_generator_has_no_total_and_no_time_left(clock, capsys):
    for _ in progress.track((i for i in range(2)), "import tsv", "img", every=0):
        clock[0] += 1
    assert capsys.readouterr().err.splitlines() == ["import tsv: img 1  elapsed 0:01", "import tsv: img 2  elapsed 0:02"]


def test_track_on_a_terminal_draws_a_bar(clock, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    list(progress.track(range(3), "pack x", "img", every=0))
    err = capsys.readouterr().err
    assert "\r" in err and "3/3" in err and "pack x: img" not in err


def test_a_pack_in_a_log_file_has_no_carriage_returns_and_bounded_lines(tmp_path, monkeypatch):
    """The command's stderr redirected to a file: no bar refreshes (``\\r``), and with a clock of 10 s
    per image at most one line per 30 s (plus the last one)."""
    from conftest import write_npy_features
    from visualbert.features import pack_features

    keys = [f"COCO_val2014_{i:012d}" for i in range(1, 31)]
    write_npy_features(tmp_path / "X_COCO", keys)
    log = tmp_path / "log.txt"
    proc = subprocess.run([sys.executable, "-m", "visualbert.features", "pack", "--image_feature_type",
                           "coco_detectron_fix_100", "--input_dir", str(tmp_path / "X_COCO")],
                          stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, timeout=300)
    assert proc.returncode == 0 and "\r" not in log.read_text()
    assert sum("pack coco_detectron_fix_100: img" in line for line in log.read_text().splitlines()) <= 1

    now = [0.0]

    def ticking():
        now[0] += 10
        return now[0]

    monkeypatch.setattr(progress.time, "time", ticking)
    with open(log, "w") as f:
        monkeypatch.setattr(sys, "stderr", f)
        pack_features("coco_detectron_fix_100", str(tmp_path / "X_COCO"), out=str(tmp_path / "again"))
    lines = log.read_text().splitlines()
    assert "\r" not in log.read_text() and 2 <= len(lines) <= 30 // 3 + 1
    assert all(line.startswith("pack coco_detectron_fix_100: img ") for line in lines) and " 30/30 " in lines[-1]
