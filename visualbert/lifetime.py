"""How a command's processes end: worker processes never outlive their parent, and Ctrl-C ends a
command with one line and exit status 130, whatever it was doing.

Worker processes (the data loader's, ``extract``'s image decoders) leave stopping to their parent:
they ignore SIGINT, which the terminal sends to the whole process group (a worker that died of it
mid-task left its parent waiting forever on the result), and they take SIGTERM's default action,
where Paddle's handler, inherited by a loader worker, would print a ``FatalError: Termination signal``
C++ traceback when the parent stops them. A parent killed outright (SIGKILL, the OOM killer) cannot
stop them, so the kernel does it: each worker asks for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``); where that is not available a thread watches the parent instead.

This module imports no Paddle: ``extract``'s decoders are spawned processes that import it.
"""
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def init_worker(parent_pid):
    """Run first in every worker process of the parent ``parent_pid``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _kill_me_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the request above was made
        os._exit(1)


class WorkerInit:
    """``init_worker`` as a DataLoader's ``worker_init_fn`` (called with the worker's id)."""

    def __init__(self):
        self.parent_pid = os.getpid()

    def __call__(self, worker_id):
        init_worker(self.parent_pid)


def _kill_me_with_parent():
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid):
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


@contextlib.contextmanager
def interrupts_in_one_line(after=None):
    """Around a command's work: Ctrl-C prints ``stopped: interrupted (SIGINT)`` (plus ``after()``, what
    is left on disk, when given) and exits with status 130, as a shell reports a SIGINT death.

    Ctrl-C is recognised by its signal, not by the exception type: Paddle hands a KeyboardInterrupt
    raised inside an operator back as its own error type.
    """
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        yield
    except BaseException as e:
        if not (interrupted or isinstance(e, KeyboardInterrupt)):
            raise
        if in_main_thread:  # a second Ctrl-C must not cut the cleanup short with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        from .progress import close_bars

        close_bars()  # end a progress bar's line, so the message gets its own
        detail = after() if after else None
        print("stopped: interrupted (SIGINT)" + (f"; {detail}" if detail else ""), file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
