"""How every command ends on a user's mistake, training script or tool alike: one line ``error: ...``
on stderr and exit status 1, no traceback. (A bad flag is argparse's: its usage line and status 2;
Ctrl-C is ``stopped: ...`` and status 130, from ``lifetime.interrupts_in_one_line``.)

Deep code says a user error by raising ``SystemExit("error: ...")`` or, around work whose bad files
and paths are the user's to fix, ``with user_errors():``; a command's ``main`` runs its work through
``run_command``, which prints that line and returns the status, so ``main(argv)`` can be called from
Python too.
"""
import contextlib
import pickle
import sys

from .lifetime import interrupts_in_one_line

# What a user's bad file, path or value raises: a missing or unreadable file, a malformed one, a
# pickle the restricted unpickler refuses (safeload.UnsafePickleError is an UnpicklingError too).
USER_ERRORS = (OSError, ValueError, pickle.UnpicklingError)
STATUS = 1


def message(error):
    """The one line an exception says; a KeyError's ``str`` would be its argument's repr (quoted)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


@contextlib.contextmanager
def user_errors(catch=USER_ERRORS):
    """Around work whose bad data or paths are the user's to fix: ``catch`` ends the run with one line."""
    try:
        yield
    except catch as e:
        raise SystemExit(f"error: {message(e)}") from None


def run_command(work, catch=USER_ERRORS, after=None):
    """Run a command's ``work()`` and return its exit status (``work``'s return value, 0 for None).

    A ``catch`` exception, or a ``SystemExit("error: ...")`` from deeper down, prints its one line on
    stderr and gives ``STATUS``. A training script passes ``catch=()``: a ValueError in the middle of
    training is a bug whose traceback is wanted, and its setup already says the user's errors in one
    line. ``after``: what Ctrl-C leaves on disk, as ``interrupts_in_one_line`` takes it.
    """
    try:
        with interrupts_in_one_line(after=after), user_errors(catch):
            status = work()
    except SystemExit as e:
        if not isinstance(e.code, str):  # a status (argparse's 2, Ctrl-C's 130): already said
            raise
        print(e.code, file=sys.stderr, flush=True)
        return STATUS
    return 0 if status is None else status
