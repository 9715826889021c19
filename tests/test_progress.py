"""visualbert.progress: what a person sees of a long job in a log file (no terminal)."""
import re
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
