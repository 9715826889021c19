"""Predict VQA2 answers with a fine-tuned model and write the EvalAI result file.

Writes [{"question_id": int, "answer": str}, ...] with exactly one entry per question of --split
(never <unk>). When the split has answers (val, minival, ...) it also prints the official VQA
accuracy, the same number training printed for that checkpoint.
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_predict_args("vqa2", __doc__, argv)


def main(argv=None):
    tasks.predict("vqa2", *parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
