"""Fine-tune VisualBERT on Flickr30K Entities phrase grounding (region-to-phrase alignment).

Each phrase of a caption is read at its last word piece and scored against every region; the
target is uniform over the regions whose box has IoU >= 0.5 with one of the entity's boxes, the
loss KL divergence, as the original code trained. Evaluates R@1 / R@5 / R@10 and the upper bound on
--eval_split every epoch (or every --eval_steps) and keeps the best R@1 model in <output_dir>/best.

Data: the Flickr30K Entities release under --annotation_dir (Sentences/, Annotations/, the
train.txt / val.txt / test.txt image lists) and region features with boxes from --features
(python -m visualbert.features import --format butd_tsv|flickr_h5, or python -m visualbert.extract --boxes).
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, flickr30k  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_flickr30k_args(__doc__, argv)


def main(argv=None):
    flickr30k.finetune(*parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
