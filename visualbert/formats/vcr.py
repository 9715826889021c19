"""VCR (rowanz/r2c): the JSON-lines splits, each image's metadata JSON and the leaderboard CSV.

- ``{train,val,test}.jsonl``: one question per line whose tokens are words or lists of object
  indices, four answers, four rationales and (not on test) the labels.
- Image metadata JSON: ``boxes`` with a detection score, ``segms`` polygons, ``width``, ``height``.
- Leaderboard CSV (r2c ``models/eval_for_leaderboard.py``): the index column ``annot_id``, the four
  answer probabilities, then for each answer i the four rationale probabilities when the context
  ends with answer i.
"""
import csv
import math

import numpy as np

from .common import json_lines, note_unique, read_json, require_file

# them (no spaces), in COCO id order. Class id = index + 1; 0 is the whole-image box.
VCR_OBJECT_CLASSES = (
    "person bicycle car motorcycle airplane bus train truck boat trafficlight firehydrant stopsign "
    "parkingmeter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sportsball kite baseballbat baseballglove skateboard surfboard "
    "tennisracket bottle wineglass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hotdog pizza donut cake chair couch pottedplant bed diningtable toilet tv laptop mouse remote keyboard "
    "cellphone microwave oven toaster sink refrigerator book clock vase scissors teddybear hairdrier "
    "toothbrush").split()
VCR_NUM_CHOICES = 4


def _vcr_tokens(value, field, num_objects, where):
    """A VCR sentence: a list whose items are words or non-empty lists of valid object indices."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: '{field}' must be a non-empty list of words and object-index lists")
    for token in value:
        if isinstance(token, str):
            continue
        if (isinstance(token, list) and token
                and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_objects for i in token)):
            continue
        raise ValueError(f"{where}: '{field}' token {token!r} is neither a word nor a list of object indices "
                         f"below {num_objects} (the item has {num_objects} objects)")
    return value


def _vcr_label(item, field, where):
    value = item.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < VCR_NUM_CHOICES:
        raise ValueError(f"{where}: '{field}' must be an integer 0..{VCR_NUM_CHOICES - 1}, got {value!r}")
    return value


def _vcr_item(item, where, need_labels):
    for field in ("annot_id", "img_fn", "metadata_fn"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise ValueError(f"{where}: '{field}' must be a non-empty string, got {item.get(field)!r}")
    where = f"{where} (annot_id {item['annot_id']})"
    objects = item.get("objects")
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise ValueError(f"{where}: 'objects' must be a list of class names")
    unknown = sorted(set(objects) - set(VCR_OBJECT_CLASSES))
    if unknown:
        raise ValueError(f"{where}: 'objects' names {unknown[0]!r}, not one of the 80 COCO classes VCR uses")
    record = {"annot_id": item["annot_id"], "objects": list(objects), "img_fn": item["img_fn"],
              "metadata_fn": item["metadata_fn"],
              "question": _vcr_tokens(item.get("question"), "question", len(objects), where)}
    for field in ("answer_choices", "rationale_choices"):
        choices = item.get(field)
        if not isinstance(choices, list) or len(choices) != VCR_NUM_CHOICES:
            raise ValueError(f"{where}: '{field}' must be a list of {VCR_NUM_CHOICES} token lists")
        record[field] = [_vcr_tokens(c, f"{field}[{i}]", len(objects), where) for i, c in enumerate(choices)]
    for field in ("answer_label", "rationale_label"):
        if field in item and item[field] is not None:
            record[field] = _vcr_label(item, field, where)
        elif need_labels:
            raise ValueError(f"{where}: no '{field}' (expected 0..3; only the test split comes without labels)")
        else:
            record[field] = None
    return record


def read_vcr(path, need_labels=True):
    """The items of a VCR split (``train.jsonl``, ``val.jsonl``, ``test.jsonl``) as dicts, in file order.

    Each has ``annot_id``, ``objects`` (class names), ``img_fn``, ``metadata_fn``, ``question``,
    ``answer_choices`` and ``rationale_choices`` (four token lists each; a token is a word or a
    list of indices into ``objects``), ``answer_label`` and ``rationale_label`` (0..3, None where
    absent, which only ``need_labels=False`` allows: the test split has none). Other fields of the
    release (movie, question_orig, ...) are not needed and not kept. Blank lines are skipped;
    annot_ids must be unique.
    """
    items, first_seen = [], {}
    for lineno, where, item in json_lines(path, "a VCR split, JSON lines with annot_id, objects, question, "
                                                 "answer_choices, rationale_choices, ..."):
        record = _vcr_item(item, where, need_labels)
        annot_id = record["annot_id"]
        note_unique(first_seen, annot_id, f"line {lineno}", where, "annot_id")
        items.append(record)
    if not items:
        raise ValueError(f"{path}: no items (expected VCR JSON lines)")
    return items


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _polygon(value):
    return (isinstance(value, list) and len(value) >= 3
            and all(isinstance(p, list) and len(p) == 2 and all(_number(c) for c in p) for p in value))


def read_vcr_metadata(path, num_objects=None):
    """An image's VCR metadata JSON as ``{"boxes": float32 [N, 5], "segms": [[polygon, ...]] * N,
    "width": int, "height": int}``; a box is ``x1, y1, x2, y2, score`` in image pixels, a polygon a
    list of ``[x, y]`` points. ``num_objects`` (the item's object count) must not exceed N.
    """
    data = read_json(path, "a VCR image metadata JSON with boxes, segms, width and height")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with boxes, segms, width and height")
    for field in ("width", "height"):
        value = data.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{path}: '{field}' must be a positive integer, got {value!r}")
    boxes, segms = data.get("boxes"), data.get("segms")
    if not isinstance(boxes, list) or not isinstance(segms, list) or len(boxes) != len(segms):
        raise ValueError(f"{path}: 'boxes' and 'segms' must be lists of the same length (one per detection)")
    for index, (box, polygons) in enumerate(zip(boxes, segms)):
        if not (isinstance(box, list) and len(box) == 5 and all(_number(v) for v in box)):
            raise ValueError(f"{path}: boxes[{index}] must be [x1, y1, x2, y2, score], got {box!r:.80}")
        if not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
            raise ValueError(f"{path}: boxes[{index}] {box[:4]} is not a box (expected 0 <= x1 < x2, 0 <= y1 < y2)")
        if not isinstance(polygons, list) or not all(_polygon(p) for p in polygons):
            raise ValueError(f"{path}: segms[{index}] must be a list of polygons, each a list of >= 3 [x, y] points")
    if num_objects is not None and num_objects > len(boxes):
        raise ValueError(f"{path}: {len(boxes)} boxes, but the item names {num_objects} objects")
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 5), "segms": segms,
            "width": data["width"], "height": data["height"]}


def read_vcr_labels(path):
    """``{annot_id: (answer_label, rationale_label)}`` of a labelled VCR split (train/val jsonl)."""
    return {item["annot_id"]: (item["answer_label"], item["rationale_label"]) for item in read_vcr(path)}


# --------------------------------------------------------------------------------------------
# Leaderboard CSV
# --------------------------------------------------------------------------------------------

VCR_CSV_COLUMNS = ("annot_id", *(f"answer_{j}" for j in range(VCR_NUM_CHOICES)),
                   *(f"rationale_conditioned_on_a{i}_{j}" for i in range(VCR_NUM_CHOICES) for j in range(VCR_NUM_CHOICES)))


def vcr_csv_rows(predictions):
    """The leaderboard CSV of ``predictions`` ({annot_id: {"answer": 4 scores, "rationale": 4 x 4
    scores, row i conditioned on answer i}}), header first."""
    yield VCR_CSV_COLUMNS
    for annot_id, scores in predictions.items():
        yield (annot_id, *(repr(float(p)) for p in scores["answer"]),
               *(repr(float(p)) for row in scores["rationale"] for p in row))


def read_vcr_predictions(path):
    """A leaderboard CSV (header ``VCR_CSV_COLUMNS``) as ``{annot_id: {"answer", "rationale"}}``,
    the form :func:`vcr_csv_rows` writes."""
    path = require_file(path, "the VCR leaderboard CSV: annot_id, answer_0..3, rationale_conditioned_on_a{i}_{j}")
    predictions, first_seen = {}, {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != VCR_CSV_COLUMNS:
            raise ValueError(f"{path}:1: expected the header {','.join(VCR_CSV_COLUMNS[:6])},...,"
                             f"{VCR_CSV_COLUMNS[-1]} ({len(VCR_CSV_COLUMNS)} columns)")
        for lineno, row in enumerate(rows, start=2):
            if not row:
                continue
            where = f"{path}:{lineno}"
            if len(row) != len(VCR_CSV_COLUMNS):
                raise ValueError(f"{where}: {len(row)} fields, expected {len(VCR_CSV_COLUMNS)}")
            try:
                values = [float(v) for v in row[1:]]
            except ValueError:
                raise ValueError(f"{where}: the probabilities must be numbers") from None
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{where}: a probability is not finite")
            annot_id = row[0]
            note_unique(first_seen, annot_id, f"line {lineno}", where, "annot_id")
            k = VCR_NUM_CHOICES
            predictions[annot_id] = {"answer": values[:k],
                                     "rationale": [values[k * (i + 1):k * (i + 2)] for i in range(k)]}
    return predictions
