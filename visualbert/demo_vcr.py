"""The demo's VCR part: small images and questions in the exact released formats.

Written under ``DIR/X_VCR`` by ``python -m visualbert.demo``::

    X_VCR/{train,val,test}.jsonl                        VCR JSON lines (test without labels)
    X_VCR/vcr1images/lsmdc_<movie>/<clip>@<n>.jpg       the image (96 x 48), one per question
    X_VCR/vcr1images/lsmdc_<movie>/<clip>@<n>.json      its metadata: boxes (+ score), segms, width, height, names

How the answers are learnable: every image shows one person (object 0) as a filled box of one of
four colours, and a grey car (object 1) nobody mentions, on a dark noisy background. The question
asks what colour the person wears (``["what", "color", "is", [0], "wearing", "?"]``); the four
answers name the four colours (``[[0], "is", "wearing", "red", "."]``), the right one the person's
colour; the four rationales say the clothes look one of the colours, the right one the answer's.
So Q->A needs the image (the person's box), QA->R the answer in the context. All words are single
word-pieces of the shipped vocabulary. Same seed, same bytes.
"""
import json
import os
import shutil

import numpy as np

__all__ = ["VCR_COLORS", "VCR_SIZES", "VCR_PARTS", "check_vcr_parts", "write_vcr_demo", "install_vcr_demo"]

VCR_COLORS = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 230, 20), "white": (240, 240, 240)}
VCR_SIZES = {"train": 320, "val": 80, "test": 40}
VCR_PARTS = ("vcr1images", "train.jsonl", "val.jsonl", "test.jsonl")
IMAGE_WIDTH, IMAGE_HEIGHT = 96, 48
_RATIONALE = ("the", "clothes", "of", [0], "look", None, ".")


def _box(rng, x_range, y_range, min_size):
    x1 = int(rng.integers(*x_range))
    y1 = int(rng.integers(*y_range))
    x2 = min(IMAGE_WIDTH, x1 + int(rng.integers(min_size, min_size + 12)))
    y2 = min(IMAGE_HEIGHT, y1 + int(rng.integers(min_size, min_size + 12)))
    return [x1, y1, x2, y2]


def _image(rng, person, person_color, car):
    from PIL import Image

    pixels = rng.integers(0, 60, (IMAGE_HEIGHT, IMAGE_WIDTH, 3)).astype(np.uint8)
    x1, y1, x2, y2 = car
    pixels[y1:y2, x1:x2] = 128
    x1, y1, x2, y2 = person
    pixels[y1:y2, x1:x2] = VCR_COLORS[person_color]
    return Image.fromarray(pixels)


def _polygon(box):
    x1, y1, x2, y2 = box
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]]


def _sentence(template, word):
    return [word if t is None else (list(t) if isinstance(t, list) else t) for t in template]


def _item(rng, split, index, root):
    movie = f"{index // 10:04d}_DEMO_{split.upper()}"  # one image per question, no name shared across splits
    clip = f"{movie}_00.00.{index % 10:02d}.000-00.00.{index % 10 + 1:02d}.000@0"
    folder = f"lsmdc_{movie}"
    os.makedirs(os.path.join(root, "vcr1images", folder), exist_ok=True)
    colors = list(VCR_COLORS)
    color = colors[int(rng.integers(len(colors)))]
    person = _box(rng, (2, 30), (2, 10), 30)  # large: the colour must survive the encoder's stride of 16
    car = _box(rng, (66, 80), (24, 34), 10)
    _image(rng, person, color, car).save(os.path.join(root, "vcr1images", folder, clip + ".jpg"), quality=92)
    metadata = {"boxes": [person + [0.99], car + [0.9]], "segms": [_polygon(person), _polygon(car)],
                "names": ["person", "car"], "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT}
    with open(os.path.join(root, "vcr1images", folder, clip + ".json"), "w") as f:
        json.dump(metadata, f)
    answer_order = [colors[i] for i in rng.permutation(len(colors))]
    rationale_order = [colors[i] for i in rng.permutation(len(colors))]
    item = {
        "movie": movie, "objects": ["person", "car"], "img_fn": f"{folder}/{clip}.jpg",
        "metadata_fn": f"{folder}/{clip}.json", "question": ["what", "color", "is", [0], "wearing", "?"],
        "answer_choices": [[[0], "is", "wearing", c, "."] for c in answer_order],
        "rationale_choices": [_sentence(_RATIONALE, c) for c in rationale_order],
        "answer_label": answer_order.index(color), "rationale_label": rationale_order.index(color),
        "img_id": f"{split}-{index}", "question_number": 0, "annot_id": f"{split}-{index}",
    }
    if split == "test":
        del item["answer_label"], item["rationale_label"]
    return item


def write_vcr_demo(root, seed=0, progress=None, sizes=None):
    """Write the VCR part under ``root`` (a fresh directory); returns {name: count}.

    ``sizes``: questions per split (default ``VCR_SIZES``; tests write fewer).
    """
    rng = np.random.default_rng([seed, 5])  # its own stream: the other parts stay the same
    counts = {}
    for split, count in (sizes or VCR_SIZES).items():
        lines = []
        for index in range(count):
            lines.append(json.dumps(_item(rng, split, index, root)))
            if progress is not None:
                progress(1)
        with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
        counts[f"vcr_{split}"] = count
    return counts


def check_vcr_parts(root, marker):
    """Refuse to replace VCR data the demo did not write."""
    if os.path.exists(os.path.join(root, marker)):
        return
    for part in VCR_PARTS:
        if os.path.lexists(os.path.join(root, part)):
            raise ValueError(f"{os.path.join(root, part)} exists and was not written by the demo; "
                             "refusing to replace it (pass another --out_dir)")


def install_vcr_demo(tmp_root, final_root):
    """Move the freshly written parts from ``tmp_root`` over an earlier demo's in ``final_root``."""
    os.makedirs(final_root, exist_ok=True)
    for part in VCR_PARTS:
        target = os.path.join(final_root, part)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
        os.rename(os.path.join(tmp_root, part), target)
