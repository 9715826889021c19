"""Pretrain VisualBERT on region features.

  coco_captions  masked LM + image-caption matching (1 = the caption belongs to the image)
  vqa2           masked LM on "question ? answer"
  nlvr2          masked LM + the NLVR2 label on the matching head (--no_nlvr2_label: MLM only)

Single process:  python run_pretrain.py --input_dir X_COCO --output_dir logs/x --dataset coco_captions ...
Data parallel:   python -m paddle.distributed.launch --gpus 0,1 run_pretrain.py ...
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, tasks  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_pretrain_args(__doc__, argv)


def main(argv=None):
    tasks.pretrain(*parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
