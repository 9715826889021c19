"""Writing a result file so that it is either complete or not there: one function every writer uses.

The content goes to a temporary file beside the target, which is renamed over it once written, so
a crash, a full disk or Ctrl-C never leaves half a file (nor replaces a good one with half of one).
"""
import os
import tempfile

__all__ = ["write_file"]


def write_file(path, write, binary=False):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    The file gets the mode any new file gets (the umask's), not the temporary file's private 0600.
    An OSError (disk full, read-only) becomes one line naming the file, and nothing is left behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise SystemExit(f"error: writing {path} failed ({e.strerror or e}); nothing was written") from None
        raise
    return path
