"""Flickr30K Entities demo data in the formats of the release, with answers a tiny model can learn.

``write_flickr30k(root)`` writes, under ``root``::

    Flickr30kEntities/Sentences/<image_id>.txt    two captions an image, phrases in [/EN#<id>/<type> words] markup
    Flickr30kEntities/Annotations/<image_id>.xml  VOC-style: size, one <object> per box, scene / nobndbox entities
    Flickr30kEntities/{train,val,test}.txt        the image lists
    flickr30k_butd.tsv                           bottom-up-attention TSV: image_id, image_w, image_h, num_boxes,
                                                  boxes, features (base64 float32), 10 detections an image

``python -m visualbert.features import --format butd_tsv`` turns the TSV into the store the
grounding scripts read, as with the real release.

How the answer is planted: each object word (man, dog, guitar, ...) has a fixed random direction
in feature space; a detection of that object carries it (plus noise). An image shows 2 to 4 objects
of different words in separate cells of a 4 x 3 layout; each gets a detection whose box is its
ground-truth box shifted a little (IoU >= 0.5), the other cells hold distractor detections of
words the image does not show. Learning which direction goes with which word grounds every phrase,
so R@1 climbs far above chance (1 / 10). One object in ten has no detection (the upper bound stays
below 100%), every caption has a box-less ``scene`` phrase and some a ``notvisual`` one (both left
out, as the release's are). Same ``seed``, same bytes.
"""
import base64
import os

import numpy as np

__all__ = ["write_flickr30k", "OBJECTS", "SPLITS"]

OBJECTS = {"man": "people", "woman": "people", "child": "people", "dog": "animals", "horse": "animals",
           "shirt": "clothing", "hat": "clothing", "car": "vehicles", "bicycle": "vehicles", "guitar": "instruments",
           "hand": "bodyparts", "ball": "other", "bench": "other"}
SPLITS = {"train": 120, "val": 30, "test": 30}
WIDTH, HEIGHT, COLS, ROWS = 480, 360, 4, 3
DETECTIONS = 10  # one per cell but two: every image has as many
FEATURE_DIM = 32
NOISE = 0.5
MISSED = 0.1  # share of objects the detector misses
ID_BASE = {"train": 1000000, "val": 2000000, "test": 3000000}


def _b64(array):
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.float32).tobytes()).decode("ascii")


def _cell_box(rng, cell):
    col, row = cell % COLS, cell // COLS
    cw, ch = WIDTH // COLS, HEIGHT // ROWS
    w, h = (int(v) for v in rng.integers([cw * 6 // 10, ch * 6 // 10], [cw - 4, ch - 4]))
    x = col * cw + int(rng.integers(2, cw - w - 1))
    y = row * ch + int(rng.integers(2, ch - h - 1))
    return [x, y, x + w, y + h]


def _detected(rng, box):
    """The ground-truth box shifted by up to a tenth of its size: IoU stays well above 0.5."""
    w, h = box[2] - box[0], box[3] - box[1]
    dx, dy = (int(v) for v in rng.integers([-w // 10, -h // 10], [w // 10 + 1, h // 10 + 1]))
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


def _captions(rng, objects, scene_id):
    """Two captions naming the objects (entity id = index + 1), each with a box-less scene phrase."""
    words = list(objects)
    phrase = lambda i, article: f"[/EN#{i + 1}/{OBJECTS[words[i]]} {article} {words[i]}]"  # noqa: E731
    first = f"{phrase(0, 'A')} is next to {phrase(1, 'a')}"
    if len(words) > 2:
        first += f" and {phrase(2, 'a')}"
    first += f" in [/EN#{scene_id}/scene the park] ."
    order = rng.permutation(len(words))
    second = " , ".join(phrase(int(i), "the") for i in order)
    second = "Here " + second + f" stand near [/EN#{scene_id}/scene a street]"
    if rng.random() < 0.5:
        second += " as [/EN#0/notvisual everyone] can see"
    return [first, second + " ."]


def _xml(image_id, boxes, scene_id):
    objects = "".join(
        f"<object><name>{i + 1}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>\n" for i, b in enumerate(boxes))
    return (f"<annotation>\n<filename>{image_id}.jpg</filename>\n<size><width>{WIDTH}</width><height>{HEIGHT}</height>"
            f"<depth>3</depth></size>\n{objects}<object><name>{scene_id}</name><nobndbox>1</nobndbox>"
            f"<scene>1</scene></object>\n</annotation>\n")


def write_flickr30k(root, seed=0, splits=None):
    """Write the demo release under ``root``; returns {"annotation_dir", "tsv", "images"}."""
    rng = np.random.default_rng([seed, 30])
    words = list(OBJECTS)
    directions = rng.standard_normal((len(words), FEATURE_DIM)).astype(np.float32)
    directions *= 3.0 / np.linalg.norm(directions, axis=1, keepdims=True)
    annotation_dir = os.path.join(root, "Flickr30kEntities")
    for sub in ("Sentences", "Annotations"):
        os.makedirs(os.path.join(annotation_dir, sub), exist_ok=True)
    tsv = os.path.join(root, "flickr30k_butd.tsv")
    with open(tsv, "w") as table:
        for split, count in (splits or SPLITS).items():
            ids = [str(ID_BASE[split] + i) for i in range(count)]
            with open(os.path.join(annotation_dir, f"{split}.txt"), "w") as f:
                f.write("\n".join(ids) + "\n")
            for image_id in ids:
                n = int(rng.integers(2, 5))
                shown = [words[int(i)] for i in rng.choice(len(words), size=n, replace=False)]
                cells = [int(c) for c in rng.permutation(COLS * ROWS)]
                truth = [_cell_box(rng, c) for c in cells[:n]]
                scene_id = n + 1
                with open(os.path.join(annotation_dir, "Sentences", f"{image_id}.txt"), "w") as f:
                    f.write("\n".join(_captions(rng, shown, scene_id)) + "\n")
                with open(os.path.join(annotation_dir, "Annotations", f"{image_id}.xml"), "w") as f:
                    f.write(_xml(image_id, truth, scene_id))
                boxes, labels = [], []
                for word, box in zip(shown, truth):
                    if rng.random() >= MISSED:
                        boxes.append(_detected(rng, box))
                        labels.append(words.index(word))
                others = [i for i in range(len(words)) if words[i] not in shown]
                for cell in cells[n:]:
                    if len(boxes) == DETECTIONS:
                        break
                    boxes.append(_cell_box(rng, cell))
                    labels.append(int(rng.choice(others)))
                order = rng.permutation(len(boxes))
                boxes = np.asarray(boxes, dtype=np.float32)[order]
                feats = directions[np.asarray(labels)[order]] + NOISE * rng.standard_normal((len(boxes), FEATURE_DIM))
                fields = [image_id, str(WIDTH), str(HEIGHT), str(len(boxes)), _b64(boxes), _b64(feats)]
                table.write("\t".join(fields) + "\n")
    return {"annotation_dir": annotation_dir, "tsv": tsv, "images": sum((splits or SPLITS).values())}
