"""Progress a person can follow, on a terminal and in a log file, for training and evaluation."""
import sys
import time

import paddle.distributed as dist
from tqdm import tqdm


class Progress:
    """Progress a person can follow: a tqdm bar on a terminal; in a log file (stderr is not a
    terminal, e.g. under paddle.distributed.launch, where every bar refresh would be a new line)
    one plain line on stderr each time ``show`` is called. Only rank 0 shows anything."""

    def __init__(self, desc, unit, total, initial=0, leave=True):
        self.desc, self.unit, self.total, self.done, self.first = desc, unit, total, initial, initial
        self.start = self.shown = time.time()
        self.bar = None
        if _is_main() and sys.stderr.isatty():
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
        if time.time() - self.shown < at_most_every:
            return
        self.shown = time.time()
        elapsed = self.shown - self.start
        left = elapsed / max(self.done - self.first, 1) * (self.total - self.done)
        parts = [f"{self.desc}: {self.unit} {position}/{self.total}"] + [f"{k} {v}" for k, v in (fields or {}).items()]
        if _is_main():  # on stderr, like the bar: stdout stays for results (run_predict's JSON line)
            print("  ".join(parts + [f"elapsed {_clock(elapsed)}", f"left {_clock(left)}"]), file=sys.stderr, flush=True)

    def write(self, line):
        """A line of its own that the bar does not overwrite."""
        if self.bar:
            self.bar.write(line)
        elif _is_main():
            print(line, flush=True)

    def close(self):
        if self.bar:
            self.bar.close()


def _clock(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _is_main():
    return dist.get_rank() == 0
