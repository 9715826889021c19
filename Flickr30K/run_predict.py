"""Rank every region for each phrase of a Flickr30K Entities split with a fine-tuned model.

Writes a JSON list with one object per phrase: image_id, caption_index, phrase_index, entity_id,
phrase, types, boxes (every region's box in pixels, best first) and scores; prints R@1 / R@5 /
R@10 and the upper bound, the same numbers training printed for that checkpoint and
python -m visualbert.evaluate flickr30k computes from the file.
"""
import sys

from visualbert import quiet

quiet.silence()  # first: paddle is imported without third-party noise
from visualbert import cli, flickr30k  # noqa: E402
from visualbert.errors import run_command  # noqa: E402


def parse_args(argv=None):
    return cli.parse_flickr30k_predict_args(__doc__, argv)


def main(argv=None):
    flickr30k.predict(*parse_args(argv))


if __name__ == "__main__":
    # a user error is one line and status 1; an error in the middle of training keeps its traceback
    sys.exit(run_command(main, catch=()))
