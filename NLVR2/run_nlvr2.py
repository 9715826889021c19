"""Fine-tune VisualBERT on NLVR2: is the sentence true of the image pair?

Left image regions get visual token type 0, right ones 1. Evaluates accuracy and consistency on
--eval_split every epoch (or every --eval_steps) and keeps the best model in <output_dir>/best.
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_finetune_args("nlvr2", __doc__, argv)


def main(argv=None):
    tasks.finetune("nlvr2", *parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
