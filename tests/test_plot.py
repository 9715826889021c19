"""Plotting of a run's metrics.jsonl."""
import json
import os
import subprocess
import sys

import pytest

from visualbert.plot import plot_runs, read_metrics, series

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RECORDS = [
    {"step": 10, "epoch": 0, "lr": 1e-5, "loss": 2.5, "masked_lm_loss": 2.0, "note": "warmup"},
    {"step": 20, "epoch": 0, "lr": 2e-5, "loss": 2.1, "masked_lm_loss": 1.7},
    {"step": 20, "eval_vqa_accuracy": 0.41, "eval_loss": 2.2},
    {"eval_accuracy": 0.55, "eval_consistency": 0.2},
]


def write_run(run_dir, records, tail=""):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run_dir


def test_series_groups_every_numeric_key():
    grouped = series(RECORDS)
    assert set(grouped) == {"losses", "learning rate", "eval metrics"}
    assert set(grouped["losses"]) == {"loss", "masked_lm_loss", "eval_loss"}
    assert set(grouped["eval metrics"]) == {"eval_vqa_accuracy", "eval_accuracy", "eval_consistency"}
    assert grouped["learning rate"]["lr"] == ([10, 20], [1e-5, 2e-5])
    # an eval line without a step belongs to the last step logged before it
    assert grouped["eval metrics"]["eval_accuracy"] == ([20], [0.55])


def test_plot_writes_png_with_panels(tmp_path):
    out = tmp_path / "m.png"
    titles = plot_runs({"run": RECORDS}, out)
    assert titles == ["losses", "learning rate", "eval metrics"]
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_truncated_last_line_is_dropped(tmp_path):
    run = write_run(tmp_path / "run", RECORDS, tail='{"step": 30, "lo')
    assert read_metrics(run) == RECORDS


def test_broken_line_in_the_middle_is_an_error(tmp_path):
    run = write_run(tmp_path / "run", [], tail='{"step": 1}\n{"step": \n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not valid JSON"):
        read_metrics(run)


def plot_cli(*args):
    return subprocess.run([sys.executable, "-m", "visualbert.plot", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_default_output_per_run(tmp_path):
    runs = [write_run(tmp_path / name, RECORDS) for name in ("a", "b")]
    proc = plot_cli(*runs)
    assert proc.returncode == 0, proc.stderr
    for run in runs:
        assert (run / "metrics.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_out_compares_runs_in_one_file(tmp_path):
    runs = [write_run(tmp_path / name, RECORDS[:2]) for name in ("a", "b")]
    out = tmp_path / "compare.png"
    proc = plot_cli(*runs, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not (runs[0] / "metrics.png").exists()


@pytest.mark.parametrize("content, message", [
    (None, "metrics.jsonl: no such file"),
    ("", "no metrics recorded yet"),
    ('{"step": 1, "lo', "no metrics recorded yet"),
])
def test_cli_missing_or_empty_log(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    proc = plot_cli(run)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def drawn_figure(runs, out, monkeypatch):
    """plot_runs' figure, kept from being closed so its lines can be read."""
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    plot_runs(runs, out)
    return kept[0]


def test_comparing_runs_keeps_one_colour_per_run_across_panels(tmp_path, monkeypatch):
    other = [dict(r, loss=r["loss"] + 1) if "loss" in r else r for r in RECORDS]
    fig = drawn_figure({"a": RECORDS, "b": other, "c": RECORDS[:2]}, tmp_path / "m.png", monkeypatch)
    colours = {}  # run -> set of colours of its lines, over every panel
    styles = {}  # metric -> set of line styles, over every run
    for ax in fig.axes:
        for line in ax.get_lines():
            run, metric = line.get_label().split(": ")
            colours.setdefault(run, set()).add(line.get_color())
            styles.setdefault(metric, set()).add(line.get_linestyle())
    assert len(fig.axes) == 3 and sorted(colours) == ["a", "b", "c"]
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len(set.union(*colours.values())) == 3  # and the runs differ
    assert all(len(s) == 1 for s in styles.values()), styles
    losses = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert losses["a: loss"] != losses["a: masked_lm_loss"]


def test_single_run_gives_each_metric_its_own_colour(tmp_path, monkeypatch):
    fig = drawn_figure({"run": RECORDS}, tmp_path / "m.png", monkeypatch)
    losses = fig.axes[0].get_lines()
    assert sorted(line.get_label() for line in losses) == ["eval_loss", "loss", "masked_lm_loss"]
    assert len({line.get_color() for line in losses}) == 3


def test_the_figure_names_the_run_labels_its_axes_and_ticks_whole_steps(tmp_path):
    import matplotlib.pyplot as plt

    from visualbert.plot import draw_runs

    records = [{"step": s, "loss": 1.0 / s, "lr": 1e-4} for s in (1, 2, 3)]  # few steps: a default axis ticks 1.5, 2.5
    fig = draw_runs({str(tmp_path / "runs" / "vqa"): records})
    try:
        fig.canvas.draw()
        assert fig._suptitle.get_text() == "vqa"
        for ax in fig.axes:
            assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel()
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "learning rate"]
    finally:
        plt.close(fig)
    fig = draw_runs({"a/vqa": records, "b/nlvr2": records})
    try:
        assert fig._suptitle.get_text() == "vqa vs nlvr2"
        assert fig.axes[0].get_legend_handles_labels()[1] == ["vqa: loss", "nlvr2: loss"]
    finally:
        plt.close(fig)
