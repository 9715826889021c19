"""COCO captions (``captions_{train,val}2014.json`` of COCO's ``annotations_trainval2014.zip``):
a JSON object whose ``annotations`` list holds one ``{"id", "image_id", "caption"}`` per caption
(``images``, ``info`` and ``licenses`` are there too, and not needed)."""
from .common import integer_id, note_unique, read_json

_EXPECTED = 'a JSON object with an "annotations" list of {"id", "image_id", "caption"}'


def read_coco_captions(path):
    """The captions of a COCO caption file as dicts ``caption_id`` and ``image_id`` (ints) and
    ``caption`` (without surrounding spaces), in caption id order; caption ids must be unique."""
    data = read_json(path, f"a COCO caption file, {_EXPECTED}")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: not a COCO caption file (expected {_EXPECTED})")
    captions, first_seen = {}, {}
    for index, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {index}"
        if not isinstance(ann, dict):
            raise ValueError(f"{where} is a {type(ann).__name__}, expected an object")
        for field in ("id", "image_id", "caption"):
            if field not in ann:
                raise ValueError(f"{where} has no '{field}'")
        caption_id = integer_id(ann["id"], where, "id")
        where = f"{where} (id {caption_id})"
        if not isinstance(ann["caption"], str):
            raise ValueError(f"{where}: 'caption' must be a string, got {ann['caption']!r}")
        note_unique(first_seen, caption_id, f"annotation {index}", where, "id")
        captions[caption_id] = {"caption_id": caption_id, "image_id": integer_id(ann["image_id"], where, "image_id"),
                                "caption": ann["caption"].strip()}
    return [captions[caption_id] for caption_id in sorted(captions)]
