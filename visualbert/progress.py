"""Progress a person can follow, on a terminal and in a log file, for every long job: training,
prediction, feature extraction, packing and importing, the demo data."""
import os
import sys
import time

from tqdm import tqdm

# In a log file, a job that iterates (``track``) writes a line at most this often.
LOG_SECONDS = 30


class Progress:
    """Progress a person can follow: a tqdm bar on a terminal; in a log file (stderr is not a
    terminal, e.g. under paddle.distributed.launch, where every bar refresh would be a new line)
    one plain line on stderr each time ``show`` is called. Only rank 0 shows anything."""

    def __init__(self, desc, unit, total, initial=0, leave=True, enabled=True):
        self.desc, self.unit, self.total, self.done, self.first = desc, unit, total, initial, initial
        self.start = self.shown = time.time()
        self.enabled, self.lines, self.shown_at = enabled, 0, None
        self.bar = None
        if enabled and _is_main() and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=leave, dynamic_ncols=True)

    def update(self, n=1):
        self.done += n
        if self.bar:
            self.bar.update(n)

    def show(self, position, fields=None, at_most_every=0):
        """``fields``: {name: formatted value}, e.g. the loss at a logging step. In a log file, no line
        when the last one is less than ``at_most_every`` seconds old."""
        if self.bar:
            if fields:
                self.bar.set_postfix(fields, refresh=True)
            return
        if not self.enabled or time.time() - self.shown < at_most_every:
            return
        self.shown = time.time()
        self.lines, self.shown_at = self.lines + 1, position
        elapsed = self.shown - self.start
        parts = [f"{self.desc}: {self.unit} {position}" + ("" if self.total is None else f"/{self.total}")]
        parts += [f"{k} {v}" for k, v in (fields or {}).items()] + [f"elapsed {_clock(elapsed)}"]
        if self.total is not None:
            parts.append(f"left {_clock(elapsed / max(self.done - self.first, 1) * (self.total - self.done))}")
        if _is_main():  # on stderr, like the bar: stdout stays for results (run_predict's JSON line)
            print("  ".join(parts), file=sys.stderr, flush=True)

    def tick(self, n=1, every=None):
        """``n`` more done, for a job without fields to show: in a log file a line at most every
        ``every`` seconds (default ``LOG_SECONDS``)."""
        self.update(n)
        self.show(self.done, at_most_every=LOG_SECONDS if every is None else every)

    def finish(self):
        """The end of a ``tick``ed job: in a log file that printed any line, a last one (so a log
        never stops at 90%); then ``close``."""
        if self.lines and self.bar is None and self.shown_at != self.done:
            self.show(self.done)
        self.close()

    def write(self, line):
        """A line of its own that the bar does not overwrite."""
        if self.bar:
            self.bar.write(line)
        elif _is_main():
            print(line, flush=True)

    def close(self):
        if self.bar:
            self.bar.close()


def track(items, desc, unit, total=None, initial=0, enabled=True, every=None):
    """Yield ``items`` while showing how far they got: a bar on a terminal; in a log file a line at
    most every ``every`` seconds (default ``LOG_SECONDS``), and a last one at the end when the job printed any (so a log never
    stops at 90%). ``total`` defaults to ``len(items)`` (unknown for a generator: no time left is
    estimated); ``initial`` items were done before (a resume)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    progress = Progress(desc, unit, total, initial=initial, enabled=enabled)
    try:
        for item in items:
            yield item
            progress.tick(every=every)
    except BaseException:
        progress.close()
        raise
    progress.finish()


def close_bars():
    """Close every open bar (its line ends), e.g. before a one-line message about a Ctrl-C."""
    for bar in list(tqdm._instances):  # the class keeps every open bar
        bar.close()


def _clock(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _is_main():
    # the rank paddle.distributed.launch gives each process; a tool that never imports paddle
    # (features, demo) need not pay for importing it here
    if "paddle.distributed" in sys.modules:
        return sys.modules["paddle.distributed"].get_rank() == 0
    return int(os.environ.get("PADDLE_TRAINER_ID", "0")) == 0
