"""Fine-tune VisualBERT on VQA2: 3,129-way answer classification with official soft-score targets.

Evaluates with the official VQA accuracy on --eval_split every epoch (or every --eval_steps),
keeps the best model in <output_dir>/best, and never trains on the evaluation split's questions.

Data: imdb splits under --input_dir (--train_split / --eval_split), or any questions and
annotations in the official VQA JSON format (--train_questions / --train_annotations, optionally
--eval_questions / --eval_annotations) with features from --features (python -m visualbert.extract).
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_finetune_args("vqa2", __doc__, argv)


def main(argv=None):
    tasks.finetune("vqa2", *parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
