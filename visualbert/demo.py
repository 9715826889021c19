"""A small, learnable dataset in the exact on-disk formats of the real data.

``python -m visualbert.demo --out_dir DIR [--seed 0]`` writes::

    DIR/X_COCO/data/detectron_fix_100/fc6/vqa/{train2014,val2014,test2015}/COCO_<split>_<id:012d>.npy   float32 [N, 2048]
    DIR/X_COCO/data/detectron_fix_144/nlvr2/{train,val}/feature_1024dim/COCO_<split>2014_<id:012d>.npy  float32 [N, 1024]
    DIR/X_COCO/annotations/captions_{train,val}2014.json                      COCO caption format
    DIR/X_COCO/annotations/imdb_{train2014,val2014,trainval2014,minival2014,test2015}.npy   Pythia/MMF imdb (header first)
    DIR/X_COCO/annotations/answers_vqa.txt                                    the real 3,129-answer vocabulary
    DIR/X_NLVR/data/detectron_fix_144/{train,dev,test1}/feature_1024dim/<split>-<set>-<pair>-img{0,1}.png.npy  float32 [N, 1024]
    DIR/X_NLVR/annotations/{train,dev,test1}.json                             NLVR2 JSON lines
    DIR/X_FLICKR/Flickr30kEntities/{Sentences,Annotations,train.txt,...}       Flickr30K Entities release
    DIR/X_FLICKR/flickr30k_butd.tsv                                           bottom-up-attention TSV, boxes kept
    DIR/X_VCR/{train,val,test}.jsonl, DIR/X_VCR/vcr1images/<movie>/*.jpg|json  VCR (see visualbert.demo_vcr)

so ``load_dataset(name, splits, input_dir=DIR/X_COCO)`` (or ``DIR/X_NLVR``) and
``open_features(type, DIR/X_COCO)`` work on it exactly as on the real data. COCO images have 3 to 5
regions, NLVR2 images 2 or 3 (any N >= 1 is legal in the real layouts too), which keeps the files small.

How the labels are learnable: fixed random "concept" directions (one per word below, separate
tables for the 2048- and 1024-dim spaces) are added to low-noise regions. A COCO image has one
object (4 words: dog, cat, bus, car) and one colour (4 words: red, blue, ...) planted together in
every region. VQA asks, per image, "what is in the picture?" (answer: the object), "what color is
it?" (the colour), "is the <object> <colour>?" and "is there a <object> in the picture?" (yes / no;
the named colour or object is the image's own half the time). At least 6 of the 10 human answers are
right (8 for yes / no). The first two are answered from the image alone within an epoch; the yes /
no ones need the named word matched with the image, which takes the tiny model most of the demo's
VQA stage, so its accuracy curve shows learning throughout.
Captions are two or three words naming exactly the image's colour and object ("a red dog", "dog
red", ...), so a caption of another image differs from the image in 15 of 16 draws; that bounds
caption-image matching accuracy near 0.97 (less the masked-LM corruption of the named words).
An NLVR2 image holds one of two objects
(dog, bus) in every region; sentences say "both images contain a <x>." / "at least one image
contains a <x>." / "neither image contains a <x>." and are true exactly when the number of images
with x planted fits (2 / >= 1 / 0); labels are balanced. All text uses words of the shipped
bert-base-uncased vocabulary (every concept is one wordpiece) and all answers are entries of the
real answer vocabulary. Held-out splits come from the same generator with other random draws.
The Flickr30K Entities part is described in :mod:`visualbert.demo_flickr30k`.
Same ``--seed``, same bytes.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

from . import VOCAB_FILE, VQA_ANSWERS_FILE
from .demo_flickr30k import write_flickr30k
from .demo_vcr import VCR_SIZES, check_vcr_parts, install_vcr_demo, write_vcr_demo
from .formats.vqa import read_answer_vocab
from .errors import USER_ERRORS, run_command
from .progress import Progress

__all__ = ["OBJECTS", "COLORS", "SIZES", "write_demo", "main"]

# Few classes, planted in every region, and captions of only the colour and the object: with 8
# objects, 6 colours, scenes, attributes and 8-12-word captions (objects in one region), a tiny
# model trained on masked LM + matching stayed at chance matching (loss 0.693) for 1000 steps at
# any lr; the masked LM took all the capacity. With this design and configs/visualbert-tiny-demo.json
# matching reaches >= 0.9 within 1000 steps (lr 1e-3) while VQA and NLVR2 stay easy.
OBJECTS = ("dog", "cat", "bus", "car")
COLORS = ("red", "blue", "green", "white")
# NLVR2 needs the model to match a word to regions, which a tiny model learns from few images only
# when there are few objects to match.
NLVR2_OBJECTS = ("dog", "bus")

# images per COCO split, image pairs per NLVR2 split (3 sentences each), questions per image
SIZES = {"coco": {"train2014": 320, "val2014": 120, "test2015": 40}, "nlvr2": {"train": 600, "dev": 100, "test1": 100},
         "questions_per_image": 4, "captions_per_image": 5, "sentences_per_pair": 4, "regions": (3, 5), "nlvr2_regions": (2, 3)}

NOISE = 0.2
CONCEPT_NORM = 8.0

OBJECT_QUESTIONS = ("what is in the picture?", "what is shown in this photo?", "what is this?")
COLOR_QUESTIONS = ("what color is it?", "what color is the object?", "what is the color of the thing in the picture?")
# Yes/no questions that name a colour or an object: the answer depends on matching that word with the
# image, which a tiny model learns over the whole VQA stage, while the two questions above it answers
# from the image alone within an epoch (then the stage was solved at step 40 of 288 and its curve flat).
IS_COLOR_QUESTIONS = ("is the {o} {c}?", "is this {o} {c}?")
IS_OBJECT_QUESTIONS = ("is there a {o} in the picture?", "is this a {o}?")
# Short, so the two content words are not diluted among filler tokens the [CLS] summary must average over.
CAPTIONS = ("{c} {o}", "a {c} {o}", "{o} {c}", "the {c} {o}", "{c} {o} here", "a {o}, {c}")
# Statements about how many of the two images hold the object: a tiny model learns these from few
# images, while telling the left image from the right (visual token types alone) takes it far longer.
NLVR2_TEMPLATES = {"both": "both images contain a {x}.", "some": "at least one image contains a {x}.",
                   "none": "neither image contains a {x}."}
_NLVR2_TRUTH = {"both": lambda n: n == 2, "some": lambda n: n >= 1, "none": lambda n: n == 0}
_ID_BASE = {"train2014": 100000, "val2014": 300000, "test2015": 500000}


def _check_words():
    with open(VOCAB_FILE, encoding="utf-8") as f:
        vocab = set(line.rstrip("\n") for line in f)
    answers = set(read_answer_vocab(VQA_ANSWERS_FILE))
    for w in OBJECTS + COLORS:
        if w not in vocab:
            raise ValueError(f"{VOCAB_FILE}: demo word '{w}' is not a single wordpiece")
    for w in OBJECTS + COLORS:
        if w not in answers:
            raise ValueError(f"{VQA_ANSWERS_FILE}: demo answer '{w}' is not in the answer vocabulary")


def _directions(rng, dim):
    names = OBJECTS + COLORS
    vecs = rng.standard_normal((len(names), dim)).astype(np.float32)
    vecs *= CONCEPT_NORM / np.linalg.norm(vecs, axis=1, keepdims=True)
    return dict(zip(names, vecs))


def _render(rng, plants, n, dirs, dim):
    """n noise regions; plants is a list of concept lists, one per region (rest noise only)."""
    feats = (NOISE * rng.standard_normal((n, dim))).astype(np.float32)
    order = rng.permutation(n)
    for r, concepts in zip(order, plants):
        for c in concepts:
            feats[r] += dirs[c]
    return feats


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)


def _coco_images(rng, split, count):
    images = []
    for i in range(count):
        images.append({"id": _ID_BASE[split] + 7 * i + 1, "object": OBJECTS[rng.integers(len(OBJECTS))],
                       "color": COLORS[rng.integers(len(COLORS))],
                       "regions": int(rng.integers(SIZES["regions"][0], SIZES["regions"][1] + 1))})
    return images


def _human_answers(rng, right, family):
    wrong = [w for w in family if w != right]
    # Yes/no has one wrong answer, which four of ten humans would make worth full credit (min(1, n/3)).
    n_right = int(rng.integers(8, 11) if len(family) == 2 else rng.integers(6, 11))
    answers = []
    for k in range(10):
        if k < n_right:
            # Real annotators vary case, articles and punctuation; the official normalisation undoes it.
            style = rng.random()
            answers.append(right if style < 0.8 else (f"a {right}" if style < 0.9 else right.capitalize() + "."))
        else:
            answers.append(wrong[int(rng.integers(len(wrong)))])
    return [answers[k] for k in rng.permutation(10)]


def _imdb_items(rng, split, images):
    items = []
    for img in images:
        name = f"COCO_{split}_{img['id']:012d}"
        for k in range(SIZES["questions_per_image"]):
            question, right, family = _question(rng, k % 4, img)
            item = {"image_name": name, "image_id": img["id"], "question_id": img["id"] * 1000 + k,
                    "feature_path": name + ".npy", "question_str": question,
                    "question_tokens": question.rstrip("?").split()}
            if split != "test2015":
                answers = _human_answers(rng, right, family)
                item["answers"] = answers
                item["valid_answers"] = list(answers)
            items.append(item)
    return items


def _question(rng, kind, img):
    """(question, right answer, answer family) of one kind: 0 the object, 1 the colour, 2 "is the <object>
    <colour>?", 3 "is there a <object>?"; the yes/no ones name the image's colour / object half the time."""
    if kind < 2:
        templates, right, family = (OBJECT_QUESTIONS, img["object"], OBJECTS) if kind == 0 else (
            COLOR_QUESTIONS, img["color"], COLORS)
        return templates[int(rng.integers(len(templates)))], right, family
    own, others = (img["color"], COLORS) if kind == 2 else (img["object"], OBJECTS)
    named = own if rng.random() < 0.5 else [w for w in others if w != own][int(rng.integers(len(others) - 1))]
    templates = IS_COLOR_QUESTIONS if kind == 2 else IS_OBJECT_QUESTIONS
    question = templates[int(rng.integers(len(templates)))].format(o=img["object"] if kind == 2 else named, c=named)
    return question, "yes" if named == own else "no", ("yes", "no")


def _write_imdb(path, items, has_answer, created):
    header = {"create_time": created, "dataset_name": "vqa", "version": 1, "has_answer": has_answer, "has_gt_layout": False}
    arr = np.empty(len(items) + 1, dtype=object)
    arr[0] = header
    for i, item in enumerate(items, start=1):
        arr[i] = item
    np.save(path, arr, allow_pickle=True)


def _captions_json(rng, split, images):
    anns, imgs, ann_id = [], [], 1
    for img in images:
        imgs.append({"id": img["id"], "file_name": f"COCO_{split}_{img['id']:012d}.jpg", "width": 640, "height": 480})
        for t in rng.choice(len(CAPTIONS), size=SIZES["captions_per_image"], replace=False):
            anns.append({"id": _ID_BASE[split] * 10 + ann_id, "image_id": img["id"],
                         "caption": CAPTIONS[t].format(o=img["object"], c=img["color"])})
            ann_id += 1
    return {"info": {"description": "visualbert demo captions"}, "licenses": [], "images": imgs, "annotations": anns,
            "type": "captions"}


def _nlvr2_sentence(rng, left, right):
    family = ("both", "some", "none")[int(rng.integers(3))]
    want = bool(rng.random() < 0.5)
    # "both" names an object that is in at least one image, so it is false exactly when the images differ.
    candidates = sorted({left, right}, key=NLVR2_OBJECTS.index) if family == "both" else list(NLVR2_OBJECTS)
    holds = {x: _NLVR2_TRUTH[family]((left == x) + (right == x)) for x in candidates}
    fitting = [x for x in candidates if holds[x] == want] or candidates
    x = fitting[int(rng.integers(len(fitting)))]
    return NLVR2_TEMPLATES[family].format(x=x), holds[x]


# What the demo owns inside X_COCO/ and X_NLVR/, and the file that says it wrote them.
DEMO_PARTS = ("data", "annotations")
# What the demo writes under each data root (X_FLICKR: the Flickr30K Entities release and a BUTD TSV).
ROOT_PARTS = {"X_COCO": DEMO_PARTS, "X_NLVR": DEMO_PARTS, "X_FLICKR": ("Flickr30kEntities", "flickr30k_butd.tsv")}
DEMO_MARKER = ".visualbert-demo"


def _refuse_real_data(out_dir):
    """Never replace data the demo did not write (e.g. X_COCO/data symlinked to the real features)."""
    for name, parts in ROOT_PARTS.items():
        root = os.path.join(out_dir, name)
        if os.path.exists(os.path.join(root, DEMO_MARKER)):
            continue
        for part in parts:
            if os.path.lexists(os.path.join(root, part)):
                raise ValueError(f"{os.path.join(root, part)} exists and was not written by the demo; "
                                 "refusing to replace it (pass another --out_dir)")


def _self_and_parents(path):
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def write_demo(out_dir, seed=0, progress=True):
    """Write the demo under ``out_dir`` (replacing an earlier demo there); returns a summary dict."""
    _check_words()
    start = time.time()
    out_dir = os.path.abspath(out_dir)
    blocked = next((p for p in _self_and_parents(out_dir) if os.path.lexists(p) and not os.path.isdir(p)), None)
    if blocked:
        raise ValueError(f"--out_dir {out_dir}: {blocked} is a file, not a directory (pass another --out_dir)")
    _refuse_real_data(out_dir)
    check_vcr_parts(os.path.join(out_dir, "X_VCR"), DEMO_MARKER)
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".demo-partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng([seed, 0])
    dirs = {2048: _directions(np.random.default_rng([seed, 1]), 2048), 1024: _directions(np.random.default_rng([seed, 2]), 1024)}
    nlvr_dirs = _directions(np.random.default_rng([seed, 3]), 1024)
    coco = os.path.join(tmp, "X_COCO")
    ann = os.path.join(coco, "annotations")
    os.makedirs(ann)
    created = "2019-01-01T00:00:00"
    counts = {}
    imdb = {}
    total = sum(SIZES["coco"].values()) + 2 * sum(SIZES["nlvr2"].values()) + sum(VCR_SIZES.values())
    bar = Progress("demo images", "img", total, enabled=progress)
    for split, count in SIZES["coco"].items():
        images = _coco_images(rng, split, count)
        for img in images:
            # in every region, as NLVR2 does: the image's content does not hinge on one noisy region
            plants = [[img["object"], img["color"]]] * img["regions"]
            name = f"COCO_{split}_{img['id']:012d}"
            _save(os.path.join(coco, "data", "detectron_fix_100", "fc6", "vqa", split, name + ".npy"),
                  _render(rng, plants, img["regions"], dirs[2048], 2048))
            if split != "test2015":
                _save(os.path.join(coco, "data", "detectron_fix_144", "nlvr2", split[:-4], "feature_1024dim", name + ".npy"),
                      _render(rng, plants, img["regions"], dirs[1024], 1024))
            bar.tick()
        imdb[split] = _imdb_items(rng, split, images)
        if split != "test2015":
            with open(os.path.join(ann, f"captions_{split}.json"), "w") as f:
                json.dump(_captions_json(rng, split, images), f)
            counts[f"captions_{split}"] = count * SIZES["captions_per_image"]
        counts[f"images_{split}"] = count
    # minival holds out half of the val questions; trainval contains them, as the real files do.
    val = imdb["val2014"]
    minival = val[: len(val) // 2]
    for name, items, has_answer in (("train2014", imdb["train2014"], True), ("val2014", val, True),
                                    ("trainval2014", imdb["train2014"] + val, True), ("minival2014", minival, True),
                                    ("test2015", imdb["test2015"], False)):
        _write_imdb(os.path.join(ann, f"imdb_{name}.npy"), items, has_answer, created)
        counts[f"questions_{name}"] = len(items)
    shutil.copyfile(VQA_ANSWERS_FILE, os.path.join(ann, "answers_vqa.txt"))

    nlvr = os.path.join(tmp, "X_NLVR")
    os.makedirs(os.path.join(nlvr, "annotations"))
    # Its own stream, so NLVR2 stays the same when the COCO part changes.
    rng = np.random.default_rng([seed, 4])
    for split, pairs in SIZES["nlvr2"].items():
        lines = []
        for p in range(pairs):
            set_id, pair_id = p // 2, p % 2
            objs = [NLVR2_OBJECTS[int(rng.integers(len(NLVR2_OBJECTS)))]]
            objs.append(NLVR2_OBJECTS[int(rng.integers(len(NLVR2_OBJECTS)))])
            for side, obj in enumerate(objs):
                n = int(rng.integers(SIZES["nlvr2_regions"][0], SIZES["nlvr2_regions"][1] + 1))
                plants = [[obj], [obj, COLORS[int(rng.integers(len(COLORS)))]]]
                _save(os.path.join(nlvr, "data", "detectron_fix_144", split, "feature_1024dim",
                                   f"{split}-{set_id}-{pair_id}-img{side}.png.npy"), _render(rng, plants, n, nlvr_dirs, 1024))
                bar.tick()
            for k in range(SIZES["sentences_per_pair"]):
                sentence, truth = _nlvr2_sentence(rng, *objs)
                lines.append(json.dumps({"identifier": f"{split}-{set_id}-{pair_id}-{k}", "sentence": sentence,
                                         "label": "True" if truth else "False", "synset": objs[0], "query": f"{objs[0]} demo",
                                         "writer": "demo", "validation": {}}))
        with open(os.path.join(nlvr, "annotations", f"{split}.json"), "w") as f:
            f.write("\n".join(lines) + "\n")
        counts[f"nlvr2_{split}"] = len(lines)
    os.makedirs(os.path.join(tmp, "X_VCR"))
    counts.update(write_vcr_demo(os.path.join(tmp, "X_VCR"), seed=seed, progress=bar.tick))
    bar.finish()
    flickr = write_flickr30k(os.path.join(tmp, "X_FLICKR"), seed=seed)
    counts["flickr30k_images"] = flickr["images"]
    install_vcr_demo(os.path.join(tmp, "X_VCR"), os.path.join(out_dir, "X_VCR"))
    with open(os.path.join(out_dir, "X_VCR", DEMO_MARKER), "w") as f:
        f.write(f"written by python -m visualbert.demo --seed {seed}\n")
    for name, parts in ROOT_PARTS.items():
        # only the demo's own parts are replaced: a README or other files beside them stay
        final = os.path.join(out_dir, name)
        os.makedirs(final, exist_ok=True)
        for part in parts:
            old = os.path.join(final, part)
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old)
            elif os.path.lexists(old):
                os.remove(old)
            os.rename(os.path.join(tmp, name, part), os.path.join(final, part))
        with open(os.path.join(final, DEMO_MARKER), "w") as f:
            f.write(f"written by python -m visualbert.demo --seed {seed}\n")
    shutil.rmtree(tmp)
    size = sum(os.path.getsize(os.path.join(d, f)) for name in (*ROOT_PARTS, "X_VCR")
               for d, _, files in os.walk(os.path.join(out_dir, name)) for f in files)
    return {"out_dir": out_dir, "seed": seed, "bytes": size, "seconds": round(time.time() - start, 2), "counts": counts}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m visualbert.demo",
                                     description="Write a small learnable VisualBERT dataset (COCO/VQA2/NLVR2/Flickr30K/VCR) in the real "
                                                 "on-disk formats: DIR/X_COCO, DIR/X_NLVR, DIR/X_FLICKR and DIR/X_VCR, usable "
                                                 "with --input_dir like the real data.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out_dir", help="where X_COCO/, X_NLVR/, X_FLICKR/ and X_VCR/ are written (an earlier demo there is replaced; real data there is never touched)")
    where.add_argument("--own_images", metavar="DIR",
                       help="instead: draw PNG images of coloured shapes and official-format VQA questions into DIR (new or "
                            "empty), then run README's four \"Your own data\" commands on them (extract --backbone patches_hog, "
                            "run_vqa2.py, run_predict.py, evaluate) and print the VQA accuracy")
    parser.add_argument("--seed", type=int, default=0, help="generator seed; same seed, same files (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.own_images:
        from .own_demo import run_own_images

        def own_images():
            summary = run_own_images(args.own_images, seed=args.seed)
            print(f"own images: VQA accuracy {summary['accuracy']:.4f} in {summary['seconds']} s ("
                  + ", ".join(f"{name} {sec} s" for name, sec in summary["stages"]) + ")")

        # RuntimeError: a stage (one of README's commands) failed; its own output says why
        return run_command(own_images, catch=USER_ERRORS + (RuntimeError,))

    def work():
        summary = write_demo(args.out_dir, seed=args.seed, progress=not args.quiet)
        print(f"wrote {summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']} s to {summary['out_dir']}/X_COCO, "
              "X_NLVR, X_FLICKR and X_VCR")
        print("  " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items()))

    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
