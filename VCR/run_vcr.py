"""Fine-tune VisualBERT on VCR: Q->A (--mode answer) or QA->R (--mode rationale).

Each question is scored with its four choices (the multiple-choice head); the image encoder
(ResNet-50 with ROIAlign over the boxes) trains with the model. Evaluates the chosen task's accuracy
on --eval_split every epoch (or every --eval_steps) and keeps the best model in <output_dir>/best.
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_vcr_args(__doc__, argv)


def main(argv=None):
    tasks.finetune("vcr", *parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
