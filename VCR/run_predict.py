"""Predict VCR for the leaderboard: a CSV of annot_id, answer_0..3 and rationale_conditioned_on_a{i}_{j}.

The answer model scores the four answers; the rationale model scores the four rationales given each
of the four answers. For a labelled split (val) it also prints Q->A, QA->R and Q->AR.
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_vcr_predict_args(__doc__, argv)


def main(argv=None):
    tasks.predict("vcr", *parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
