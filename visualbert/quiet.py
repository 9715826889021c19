"""``silence()``, called first by every command, before paddle is imported, so that a command prints
only what it has to say. Importing this module changes nothing; library code never calls ``silence``.

Without it every command starts with third-party lines that say nothing about the run:
- ``UserWarning: No ccache found``: Paddle's C++-extension builder looks for ccache when paddle is
  imported (nothing is ever compiled here);
- ``UserWarning: Setuptools is replacing distutils``: PaddleNLP imports pip after Paddle imported
  setuptools' distutils;
- ``WARNING: OMP_NUM_THREADS set to N, not 1 ...`` (two lines): Paddle prints it while importing
  whenever OMP_NUM_THREADS > 1; the setting itself is honoured either way;
- INFO lines of other libraries, e.g. ``datasets``' ``PyTorch version ... available``: Paddle's
  import sets the root logger to INFO and gives it a handler;
- Paddle's C++ INFO lines (``I1202 ... tcp_store.cc] create libuv server ...``) under data parallel.
Each is stopped where it starts and nothing else changes: two warning filters that match only those
two messages, the OMP lines dropped from what ``import paddle`` writes to sys.stderr (everything else
passes), the root logger's level put back to what it was before ``import paddle``, and
GLOG_minloglevel=1 (C++ warnings and errors still show) unless it is set already. ``stderr_without``
serves the same purpose later: ``environment.setup_device`` drops the "Modified FLAGS detected" block that
starting data parallel prints; ``native_stderr_without`` drops a C++ line (``inference.export`` the
``Paddle static graph(PIR) not support input out tensor`` warning that saving any program prints);
``output_kept_for_errors`` holds back what a converter prints step by step (``onnx_engine.convert``) unless it fails.
"""
import contextlib
import logging
import os
import sys
import warnings

_OMP_LINES = ("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY.")
# what paddle.distributed.init_parallel_env writes when any FLAGS_* differs from its default
MODIFIED_FLAGS_LINES = ("=" * 23, "FLAGS(name=")


class _Without:
    """A stream that passes everything on to ``stream`` except writes that start with ``prefixes``.

    It stays correct after the swap too, because whatever took hold of sys.stderr meanwhile (a log
    handler, a default argument) keeps writing through it.
    """

    def __init__(self, stream, prefixes):
        self.stream, self.prefixes, self.skip_newline = stream, prefixes, False

    def write(self, text):
        if text.startswith(self.prefixes):
            self.skip_newline = True  # print() writes the line's newline by itself next
            return len(text)
        skip, self.skip_newline = self.skip_newline and text == "\n", False
        return len(text) if skip else self.stream.write(text)

    def __getattr__(self, name):  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


@contextlib.contextmanager
def native_stderr_without(fragments):
    """Drop the lines containing any of ``fragments`` that C++ code writes to file descriptor 2 while the
    block runs (glog writes there directly, past sys.stderr); every other line is written on after it."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(f in line for f in fragments)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextlib.contextmanager
def output_kept_for_errors():
    """Hold back everything written while the block runs (file descriptors 1 and 2, Python's print and
    logging records): it is written to stderr only when the block raises, where it may say why."""
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 1)
        os.dup2(caught.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            logging.disable(logging.NOTSET)
            if failed:
                caught.seek(0)
                sys.stderr.write(caught.read().decode(errors="replace"))
                sys.stderr.flush()


@contextlib.contextmanager
def stderr_without(prefixes):
    """Drop the lines of sys.stderr that start with ``prefixes`` while the block runs."""
    stderr = sys.stderr
    sys.stderr = _Without(stderr, prefixes)
    try:
        yield
    finally:
        sys.stderr = stderr


def silence():
    """Stop the lines above for the rest of this process (a command's entry point calls it first)."""
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils", category=UserWarning)
    if "paddle" in sys.modules:
        return
    # C++ INFO lines (glog), e.g. the process group's "create libuv server at port"; warnings stay
    os.environ.setdefault("GLOG_minloglevel", "1")
    root = logging.getLogger()
    level = root.level
    try:
        with stderr_without(_OMP_LINES):
            import paddle  # noqa: F401
    finally:
        root.setLevel(level)

