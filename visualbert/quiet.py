"""Imported first by every command, before paddle, so that a command prints only what it has to say.

Without it every command starts with third-party lines that say nothing about the run:
- ``UserWarning: No ccache found``: Paddle's C++-extension builder looks for ccache when paddle is
  imported (nothing is ever compiled here);
- ``UserWarning: Setuptools is replacing distutils``: PaddleNLP imports pip after Paddle imported
  setuptools' distutils;
- ``WARNING: OMP_NUM_THREADS set to N, not 1 ...`` (two lines): Paddle prints it while importing
  whenever OMP_NUM_THREADS > 1; the setting itself is honoured either way;
- INFO lines of other libraries, e.g. ``datasets``' ``PyTorch version ... available``: Paddle's
  import sets the root logger to INFO and gives it a handler.
Each is stopped where it starts and nothing else changes: two warning filters that match only those
two messages, the OMP lines dropped from what ``import paddle`` writes to sys.stderr (everything else
passes), and the root logger's level put back to what it was before ``import paddle``.
"""
import logging
import sys
import warnings

warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils", category=UserWarning)

_OMP_LINES = ("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY.")


class _WithoutOmpWarning:
    """A stream that passes everything on to ``stream`` except Paddle's two OMP_NUM_THREADS lines.

    It stays correct after the import too, because whatever took hold of sys.stderr meanwhile (a log
    handler, a default argument) keeps writing through it.
    """

    def __init__(self, stream):
        self.stream, self.skip_newline = stream, False

    def write(self, text):
        if text.startswith(_OMP_LINES):
            self.skip_newline = True  # print() writes the line's newline by itself next
            return len(text)
        skip, self.skip_newline = self.skip_newline and text == "\n", False
        return len(text) if skip else self.stream.write(text)

    def __getattr__(self, name):  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


def _import_paddle_quietly():
    if "paddle" in sys.modules:
        return
    root = logging.getLogger()
    level, stderr = root.level, sys.stderr
    sys.stderr = _WithoutOmpWarning(stderr)
    try:
        import paddle  # noqa: F401
    finally:
        sys.stderr = stderr
        root.setLevel(level)


_import_paddle_quietly()
