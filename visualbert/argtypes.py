"""Argument types for every command's numeric flags (argparse ``type=`` functions).

A leaf module: the tools (extract, features) use them without importing the training stack.
"""
import argparse
import math

# argparse ``type=`` functions: a bad value ends the run at parse time with argparse's usage line and
# one error line naming the flag, instead of a ZeroDivisionError, a Paddle traceback or a loop that
# never ends (a negative batch size yields no batches, so an epoch never finishes).


def value_range(convert, noun, low, high=None, low_open=False):
    """A ``type=`` for finite ``convert(text)`` values in [low, high] ((low, high] with ``low_open``;
    no upper bound when ``high`` is None); ``noun`` names the kind in the error line."""
    lower = f"> {low}" if low_open else f">= {low}"
    expected = f"{noun} {lower}" if high is None else f"{noun} in {'(' if low_open else '['}{low}, {high}]"

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


def int_range(low, high=None):
    """A ``type=`` for integers in [low, high] (no upper bound when ``high`` is None)."""
    return value_range(int, "an integer", low, high)


def float_range(low, high=None, low_open=False):
    """A ``type=`` for finite numbers in [low, high] ((low, high] with ``low_open``)."""
    return value_range(float, "a number", low, high, low_open)


positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = float_range(0, low_open=True)
non_negative_float = float_range(0)
fraction = float_range(0, 1)
seed_int = int_range(0, 2**32 - 1)  # numpy's global seed takes no more
