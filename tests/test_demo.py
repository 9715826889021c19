import collections
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from visualbert import VQA_ANSWERS_FILE, demo
from visualbert.examples import load_dataset
from visualbert.formats.vqa import read_answer_vocab
from visualbert.features import FEATURE_TYPES, open_features
from visualbert.safeload import load_npy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = demo.write_demo(str(out), seed=0, progress=False)
    assert summary["bytes"] < 60 * 2**20
    return out


def decode(features, dirs, names):
    """Which of ``names`` is planted in an image: the concept with the largest projection on any region."""
    table = np.stack([dirs[n] for n in names])
    return names[int((features @ table.T).max(axis=0).argmax())]


def test_layout_and_every_example_has_features(demo_dir):
    coco, nlvr = str(demo_dir / "X_COCO"), str(demo_dir / "X_NLVR")
    assert sorted(os.listdir(os.path.join(coco, "annotations"))) == sorted(
        ["answers_vqa.txt", "captions_train2014.json", "captions_val2014.json", "imdb_train2014.npy", "imdb_val2014.npy",
         "imdb_trainval2014.npy", "imdb_minival2014.npy", "imdb_test2015.npy"])
    assert sorted(os.listdir(os.path.join(nlvr, "annotations"))) == ["dev.json", "test1.json", "train.json"]
    with open(os.path.join(coco, "annotations", "answers_vqa.txt"), "rb") as f, open(VQA_ANSWERS_FILE, "rb") as g:
        assert f.read() == g.read()
    f100 = open_features("coco_detectron_fix_100", coco)
    f144 = open_features("coco_detectron_fix_144", coco)
    fnl = open_features("nlvr2_detectron_fix_144", nlvr)
    assert (f100.dim, f144.dim, fnl.dim) == (2048, 1024, 1024)
    for split in ("train", "val", "trainval", "minival", "test"):
        for ex in load_dataset("vqa2", split, input_dir=coco):
            assert f100.get(ex["image_key"]).shape[0] in (3, 4, 5)
    for ex in load_dataset("coco_captions", "val", input_dir=coco):
        assert ex["image_key"] in f144 and ex["image_key"] in f100
    for split in ("train", "dev", "test1"):
        ds = load_dataset("nlvr2", split, input_dir=nlvr)
        for ex in ds:
            for key in ex["image_keys"]:
                assert os.path.exists(FEATURE_TYPES["nlvr2_detectron_fix_144"].path(nlvr, key))
        assert 0.35 < np.mean([ex["label"] for ex in ds]) < 0.65


def test_imdb_files_have_the_header_and_all_real_keys(demo_dir):
    ann = demo_dir / "X_COCO" / "annotations"
    vocab = set(read_answer_vocab())
    for name in ("train2014", "minival2014", "test2015"):
        arr = load_npy(ann / f"imdb_{name}.npy")
        assert arr.dtype == object and isinstance(arr[0], dict) and "version" in arr[0] and "question_id" not in arr[0]
        for item in arr[1:]:
            assert {"image_name", "image_id", "question_id", "feature_path", "question_str", "question_tokens"} <= set(item)
            assert item["feature_path"] == item["image_name"] + ".npy"
            if name == "test2015":
                assert "answers" not in item
            else:
                assert len(item["answers"]) == 10 and item["valid_answers"] == item["answers"]
                top = collections.Counter(a.lower().strip(".").replace("a ", "") for a in item["answers"]).most_common(1)[0][0]
                assert top in vocab
    minival = {int(i["question_id"]) for i in load_npy(ann / "imdb_minival2014.npy")[1:]}
    trainval = {int(i["question_id"]) for i in load_npy(ann / "imdb_trainval2014.npy")[1:]}
    assert minival and minival < trainval  # the real held-out relation, which training must undo


def test_labels_are_decided_by_the_planted_regions(demo_dir):
    """An oracle that only reads the features recovers every VQA answer, NLVR2 label and caption object and colour."""
    coco, nlvr = str(demo_dir / "X_COCO"), str(demo_dir / "X_NLVR")
    d2048 = demo._directions(np.random.default_rng([0, 1]), 2048)
    dnl = demo._directions(np.random.default_rng([0, 3]), 1024)
    f100 = open_features("coco_detectron_fix_100", coco)
    kinds = collections.Counter()
    for ex in load_dataset("vqa2", "minival", input_dir=coco):
        feats = f100.get(ex["image_key"])
        seen = {"object": decode(feats, d2048, demo.OBJECTS), "color": decode(feats, d2048, demo.COLORS)}
        words = ex["question_str"].rstrip("?").split()
        majority = collections.Counter(a.lower().strip(".").replace("a ", "") for a in ex["answers"]).most_common(1)[0][0]
        if words[0] == "is":  # is the <object> <colour>? / is there a <object> ...? / is this a <object>?
            kind = "color" if words[-1] in demo.COLORS else "object"
            named = words[-1] if kind == "color" else next(w for w in words if w in demo.OBJECTS)
            assert majority == ("yes" if named == seen[kind] else "no"), ex
            kinds[f"yes/no {kind} {majority}"] += 1
        else:
            kind = "color" if "color" in ex["question_str"] else "object"
            assert seen[kind] == majority, ex
            kinds[kind] += 1
    # every kind of question is asked, and a yes/no question is as often "no" as "yes"
    assert len(kinds) == 6 and min(kinds.values()) >= 0.08 * sum(kinds.values()), kinds
    for ex in load_dataset("coco_captions", "val", input_dir=coco):
        # a caption names exactly the planted object and colour, which is what matching must compare
        feats, words = f100.get(ex["image_key"]), ex["caption"].replace(",", " ").split()
        assert {decode(feats, d2048, demo.OBJECTS), decode(feats, d2048, demo.COLORS)} == set(words) & set(demo.OBJECTS + demo.COLORS)
    fnl = open_features("nlvr2_detectron_fix_144", nlvr)
    for ex in load_dataset("nlvr2", "dev", input_dir=nlvr):
        left, right = (decode(fnl.get(k), dnl, demo.OBJECTS) for k in ex["image_keys"])
        x = ex["sentence"].rstrip(".").split()[-1]
        count = (left == x) + (right == x)
        truth = {"both": count == 2, "at": count >= 1, "neither": count == 0}[ex["sentence"].split()[0]]
        assert int(truth) == ex["label"], ex


def digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(os.path.relpath(os.path.join(d, name), root).encode())
            with open(os.path.join(d, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(demo_dir, tmp_path):
    again = demo.write_demo(str(tmp_path / "a"), seed=0, progress=False)
    assert digest(again["out_dir"]) == digest(str(demo_dir))
    other = demo.write_demo(str(tmp_path / "b"), seed=1, progress=False)
    assert digest(other["out_dir"]) != digest(str(demo_dir))
    assert not [n for n in os.listdir(again["out_dir"]) if n.startswith(".demo-partial")]


def test_cli_writes_and_reports_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "visualbert.demo", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "--out_dir" in proc.stdout and "--seed" in proc.stdout
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "visualbert.demo", "--out_dir", str(blocker), "--quiet"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"{blocker} is a file, not a directory" in proc.stderr
    # under a file too: the same line naming the file, not the OS's "Not a directory"
    proc = subprocess.run([sys.executable, "-m", "visualbert.demo", "--out_dir", str(blocker / "demo"), "--quiet"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and f"{blocker} is a file, not a directory" in proc.stderr
    assert "Errno" not in proc.stderr and blocker.read_text() == "x"
