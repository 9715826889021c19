"""Readers of the text files users bring: one module per dataset family, one reader per format.

- :mod:`.common`: finding a file, JSON with a one-line error, the lines of a text or JSON-lines
  file, integer ids, "True"/"False" labels, the line naming the ids two files disagree on.
- :mod:`.vqa`: the Pythia/MMF imdb ``.npy``, the official questions and annotations JSON, the
  EvalAI result file, ``--image_map``.
- :mod:`.coco`: COCO caption files.
- :mod:`.nlvr2`: the example identifier (and the image names and sentence it names), the
  JSON-lines splits, the prediction CSV.
- :mod:`.flickr30k`: Flickr30K Entities captions, boxes and image lists, the grounding predictions.
- :mod:`.vcr`: the JSON-lines splits, the image metadata JSON, the leaderboard CSV.

Training (``visualbert.examples``, the task modules) and scoring (``visualbert.metrics`` through
``visualbert.evaluate``) consume the records read here, so a file means the same to both. Bad
content is one line naming the file, the item (a line number, an index, an id) and what was
expected. Nothing here imports Paddle, so the scorer runs without it.
"""
