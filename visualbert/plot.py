"""Plot the metrics a training run logs, to see at a glance whether it is learning.

    python -m visualbert.plot RUN_DIR [RUN_DIR ...] [--out PNG]

Each run directory holds ``metrics.jsonl``, one JSON object per line. Every numeric key is
plotted against ``step``, grouped into panels: losses, learning rate, evaluation metrics
(``eval_*``), and anything else. Without ``--out`` each run gets ``RUN_DIR/metrics.png``; with
it, all runs are drawn into that one file so they can be compared: one colour per run in every
panel, one line style per metric.
"""
import argparse
import json
import os
import sys

from .atomic import write_file
from .errors import run_command

PANELS = ("losses", "learning rate", "eval metrics", "other")
Y_LABELS = {"losses": "loss", "learning rate": "learning rate", "eval metrics": "score", "other": "value"}

# Positions in training, not measurements of it: step is the x axis and epoch just restates it.
_AXIS_KEYS = frozenset(("step", "epoch"))
_LINE_STYLES = ("-", "--", ":", "-.")


def read_metrics(run_dir):
    """The records of ``RUN_DIR/metrics.jsonl``, in order.

    A run killed mid-write leaves a partial last line; that line is dropped so the rest can
    still be plotted. A broken line anywhere else means the file is not a metrics log.
    """
    path = os.path.join(os.fspath(run_dir), "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected the metrics log a training run writes)")
    with open(path, encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    records = []
    for i, (lineno, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no metrics recorded yet (expected one JSON object per line)")
    return records


def panel_of(key):
    """Which panel a metric belongs to. Evaluation losses go with the losses, on a shared scale."""
    if "loss" in key:
        return "losses"
    if key.startswith("eval_"):
        return "eval metrics"
    if key in ("lr", "learning_rate") or key.endswith("_lr"):
        return "learning rate"
    return "other"


def series(records):
    """{panel: {key: (steps, values)}} for every numeric key in ``records``.

    An evaluation line written without a step is placed at the last step seen before it, since
    it evaluates the model as it was then.
    """
    grouped = {}
    step = 0
    for record in records:
        if _is_number(record.get("step")):
            step = record["step"]
        for key, value in record.items():
            if key in _AXIS_KEYS or not _is_number(value):
                continue
            steps, values = grouped.setdefault(panel_of(key), {}).setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    return grouped


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_name(run_dir):
    """How a run is named in titles and legends: its directory's name (``logs/vqa`` -> ``vqa``)."""
    return os.path.basename(os.path.normpath(os.fspath(run_dir))) or os.fspath(run_dir)


def draw_runs(runs):
    """A matplotlib figure of ``runs`` ({label: records}): one panel per group in PANELS order that has
    data, titled with the runs' names, axes labelled, steps on whole-number ticks. The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    per_run = {label: series(records) for label, records in runs.items()}
    titles = [p for p in PANELS if any(p in groups for groups in per_run.values())]
    if not titles:
        raise ValueError(f"no numeric metrics besides step/epoch in {', '.join(runs)}")
    names = [run_name(label) for label in runs]
    if len(set(names)) < len(names):  # two runs of one name in different places: the paths tell them apart
        names = [os.fspath(label) for label in runs]
    # Comparing runs, a run keeps its colour in every panel and a metric its line style in every run;
    # a single run gives each metric its own colour.
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(titles), 1, figsize=(9, 3.2 * len(titles) + 0.4), sharex=True, squeeze=False)
    axes = axes[:, 0]
    fig.suptitle(" vs ".join(names))
    for ax, title in zip(axes, titles):
        keys = sorted(set().union(*(groups.get(title, {}) for groups in per_run.values())))
        for run_index, (name, groups) in enumerate(zip(names, per_run.values())):
            for key, (steps, values) in sorted(groups.get(title, {}).items()):
                if len(runs) == 1:
                    look = {"label": key}
                else:
                    look = {"label": f"{name}: {key}", "color": colours[run_index % len(colours)],
                            "linestyle": _LINE_STYLES[keys.index(key) % len(_LINE_STYLES)]}
                # Single points (one evaluation so far) are invisible as a line alone.
                ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, **look)
        ax.set_title(title)
        ax.set_ylabel(Y_LABELS[title])
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are counts: no tick at step 2.5
        ax.tick_params(labelbottom=True)  # sharex hides all but the bottom panel's step numbers
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.tight_layout()
    return fig


def _image_format(path):
    """matplotlib's format for ``path`` by its extension (it cannot see the name of the temporary file it
    writes into), PNG when there is none."""
    return os.path.splitext(path)[1][1:].lower() or "png"


def plot_runs(runs, out_path):
    """Draw ``runs`` ({label: records}) into one PNG at ``out_path``; returns the panel titles."""
    import matplotlib.pyplot as plt

    fig = draw_runs(runs)
    try:
        write_file(out_path, lambda f: fig.savefig(f, dpi=100, format=_image_format(out_path)), binary=True)
        return [ax.get_title() for ax in fig.axes]
    finally:
        plt.close(fig)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m visualbert.plot",
        description="Plot RUN_DIR/metrics.jsonl (losses, learning rate, eval metrics against "
                    "step) to a PNG.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="training output directory holding metrics.jsonl")
    parser.add_argument("--out", metavar="PNG",
                        help="write one PNG comparing all runs here, one colour per run (default: "
                             "RUN_DIR/metrics.png for each run)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    def work():
        runs = {run_dir: read_metrics(run_dir) for run_dir in args.run_dirs}
        if args.out:
            targets = [(args.out, runs)]
        else:
            targets = [(os.path.join(d, "metrics.png"), {d: r}) for d, r in runs.items()]
        for out_path, subset in targets:
            plot_runs(subset, out_path)
            print(out_path)

    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
