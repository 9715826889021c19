"""Predict NLVR2 with a fine-tuned model: a CSV of `identifier,True|False`, one line per example.

For dev / test1 (labelled) it also prints accuracy and consistency, as lil-lab/nlvr's metrics do.
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_predict_args("nlvr2", __doc__, argv)


def main(argv=None):
    tasks.predict("nlvr2", *parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
