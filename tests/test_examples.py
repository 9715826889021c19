import json
import logging
import os

import numpy as np
import pytest

from visualbert import VQA_ANSWERS_FILE
from visualbert import examples as D
from visualbert.features import FEATURE_TYPES
from visualbert.formats.vqa import read_answer_vocab

NLVR2_DEV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "nlvr2_dev.json")


def imdb_item(qid, image_id=9, split="train2014", answers=True, valid_only=False):
    name = f"COCO_{split}_{image_id:012d}"
    item = {"image_name": name, "image_id": image_id, "question_id": qid, "feature_path": name + ".npy",
            "question_str": "what is this?", "question_tokens": ["what", "is", "this"]}
    if answers:
        key = "valid_answers" if valid_only else "answers"
        item[key] = ["dog"] * 10
    return item


def write_imdb(path, items, header=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    elems = ([{"create_time": "x", "dataset_name": "vqa", "version": 1, "has_answer": True}] if header else []) + items
    arr = np.empty(len(elems), dtype=object)
    for i, e in enumerate(elems):
        arr[i] = e
    np.save(path, arr, allow_pickle=True)


def test_real_nlvr2_dev_parses_and_maps_every_line_to_its_two_image_keys(tmp_path):
    (tmp_path / "annotations").mkdir()
    os.symlink(NLVR2_DEV, tmp_path / "annotations" / "dev.json")
    ds = D.load_dataset("nlvr2", "dev", input_dir=str(tmp_path))
    assert len(ds) == 6982
    with open(NLVR2_DEV) as f:
        raw = [json.loads(line) for line in f]
    layout = FEATURE_TYPES["nlvr2_detectron_fix_144"]
    for ex, item in zip(ds, raw):
        pair = item["identifier"].rsplit("-", 1)[0]
        assert ex["image_keys"] == (pair + "-img0.png", pair + "-img1.png")
        assert ex["label"] == (1 if item["label"] == "True" else 0)
        assert ex["sentence"] == item["sentence"]
        assert layout.split_of(ex["image_keys"][1]) == "dev"
    first = ds[0]
    assert first["identifier"] == "dev-850-0-0" and first["image_keys"] == ("dev-850-0-img0.png", "dev-850-0-img1.png")
    assert layout.path("/X_NLVR", first["image_keys"][0]) == "/X_NLVR/data/detectron_fix_144/dev/feature_1024dim/dev-850-0-img0.png.npy"
    assert 0.4 < np.mean([ex["label"] for ex in ds]) < 0.6


def test_answer_vocab_is_the_real_3129_with_unk_first(tmp_path):
    vocab = read_answer_vocab()
    assert len(vocab) == 3129 and vocab[0] == "<unk>" and len(set(vocab)) == 3129
    assert read_answer_vocab(VQA_ANSWERS_FILE) == vocab
    bad = tmp_path / "answers.txt"
    bad.write_text("yes\nno\n")
    with pytest.raises(ValueError, match=r"answers.txt: line 1 must be '<unk>', found 'yes'"):
        read_answer_vocab(str(bad))
    bad.write_text("\ufeff<unk>\nyes\na dog\nno\na dog\n\n")  # a byte-order mark is not part of <unk>
    with pytest.raises(ValueError, match=r"answers.txt:5: answer 'a dog' appears twice \(also line 3\)"):
        read_answer_vocab(str(bad))
    with pytest.raises(FileNotFoundError, match=r"nope.txt: no such file \(expected an answer vocabulary"):
        read_answer_vocab(str(tmp_path / "nope.txt"))


def test_vqa2_imdb_skips_header_falls_back_to_valid_answers_and_test_has_none(tmp_path):
    ann = tmp_path / "annotations"
    write_imdb(str(ann / "imdb_train2014.npy"), [imdb_item(1), imdb_item(2, valid_only=True)])
    write_imdb(str(ann / "imdb_test2015.npy"), [imdb_item(3, split="test2015", answers=False)])
    train, test = D.load_dataset("vqa2", ["train", "test"], annotation_dir=str(ann))
    assert [ex["question_id"] for ex in train] == [1, 2]
    assert train[1]["answers"] == ["dog"] * 10
    assert train[0]["image_key"] == "COCO_train2014_000000000009" and train[0]["split"] == "train"
    assert test[0]["answers"] is None and test[0]["image_key"] == "COCO_test2015_000000000009"
    assert FEATURE_TYPES["coco_detectron_fix_100"].split_of(test[0]["image_key"]) == "test2015"


def test_minival_questions_are_removed_from_trainval_with_a_count(tmp_path, caplog):
    ann = tmp_path / "annotations"
    write_imdb(str(ann / "imdb_trainval2014.npy"), [imdb_item(q) for q in range(10)])
    write_imdb(str(ann / "imdb_minival2014.npy"), [imdb_item(q, split="val2014") for q in (2, 3, 4)])
    with caplog.at_level(logging.WARNING, logger="visualbert.examples"):
        trainval, minival = D.load_dataset("vqa2", ["trainval", "minival"], input_dir=str(tmp_path))
    assert sorted(ex["question_id"] for ex in trainval) == [0, 1, 5, 6, 7, 8, 9]
    assert len(minival) == 3
    assert "removed 3 examples that are also in minival" in caplog.text
    # an evaluation split loaded elsewhere is excluded by name
    only = D.load_dataset("vqa2", "trainval", input_dir=str(tmp_path), exclude_split="minival")
    assert len(only) == 7


def test_empty_dataset_after_filtering_is_an_error(tmp_path):
    ann = tmp_path / "annotations"
    write_imdb(str(ann / "imdb_val2014.npy"), [imdb_item(q) for q in (1, 2)])
    write_imdb(str(ann / "imdb_minival2014.npy"), [imdb_item(q) for q in (1, 2)])
    with pytest.raises(ValueError, match=r"imdb_val2014.npy: vqa2 val has no examples after removing minival"):
        D.load_dataset("vqa2", ["val", "minival"], input_dir=str(tmp_path))


def test_imdb_without_header_or_missing_a_key(tmp_path):
    path = str(tmp_path / "imdb_train2014.npy")
    write_imdb(path, [imdb_item(1), imdb_item(2)], header=False)
    assert [ex["question_id"] for ex in D.load_dataset("vqa2", "train", annotation_dir=str(tmp_path))] == [1, 2]
    item = imdb_item(7)
    del item["question_str"]
    write_imdb(path, [imdb_item(1), item])
    with pytest.raises(ValueError, match=r"imdb_train2014.npy: item 2 \(question_id 7\) has no 'question_str'"):
        D.load_dataset("vqa2", "train", annotation_dir=str(tmp_path))
    write_imdb(path, [imdb_item(5, answers=False)])
    with pytest.raises(ValueError, match=r"item 1 \(question_id 5\) has neither 'answers' nor 'valid_answers'"):
        D.load_dataset("vqa2", "train", annotation_dir=str(tmp_path))
    np.save(path, np.ones(3))
    with pytest.raises(ValueError, match="expected an imdb object array"):
        D.load_dataset("vqa2", "train", annotation_dir=str(tmp_path))


def test_coco_captions(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    data = {"images": [{"id": 9}, {"id": 25}],
            "annotations": [{"id": 2, "image_id": 25, "caption": "A giraffe. "}, {"id": 1, "image_id": 9, "caption": "a dog"},
                            {"id": 3, "image_id": 9, "caption": "a puppy"}]}
    (ann / "captions_val2014.json").write_text(json.dumps(data))
    ds = D.load_dataset("coco_captions", "val", input_dir=str(tmp_path))
    assert [(ex["caption_id"], ex["image_id"], ex["caption"]) for ex in ds] == [(1, 9, "a dog"), (2, 25, "A giraffe."), (3, 9, "a puppy")]
    assert ds[1]["image_key"] == "COCO_val2014_000000000025"
    (ann / "captions_train2014.json").write_text("{not json")
    with pytest.raises(ValueError, match="captions_train2014.json: not valid JSON"):
        D.load_dataset("coco_captions", "train", input_dir=str(tmp_path))


def test_nlvr2_bad_lines(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    good = '{"identifier": "train-1-0-0", "sentence": "two dogs", "label": "True"}\n'
    (ann / "train.json").write_text(good + "\n" + '{"identifier": "train-1-0-1", "sentence": "x", "label": "False"\n')
    with pytest.raises(ValueError, match=r"train.json:3: not a JSON object"):
        D.load_dataset("nlvr2", "train", input_dir=str(tmp_path))
    (ann / "train.json").write_text(good + '{"identifier": "train-1-0-1", "sentence": "x"}\n')
    with pytest.raises(ValueError, match=r"train.json:2: identifier train-1-0-1 has no 'label' \(expected \"True\" or \"False\""):
        D.load_dataset("nlvr2", "train", input_dir=str(tmp_path))
    (ann / "train.json").write_text(good + '{"identifier": "train-1-0-1", "sentence": "x", "label": "maybe"}\n')
    with pytest.raises(ValueError, match=r"train.json:2: label 'maybe'"):
        D.load_dataset("nlvr2", "train", input_dir=str(tmp_path))
    (ann / "train.json").write_text('{"identifier": "train1", "sentence": "x", "label": "True"}\n')
    with pytest.raises(ValueError, match=r"train.json:1: NLVR2 identifier 'train1'"):
        D.load_dataset("nlvr2", "train", input_dir=str(tmp_path))
    (ann / "test2.json").write_text('{"identifier": "test2-0-1-2", "sentence": "x"}\n')
    test2 = D.load_dataset("nlvr2", "test2", input_dir=str(tmp_path))
    assert test2[0]["label"] is None and test2[0]["image_keys"] == ("test2-0-1-img0.png", "test2-0-1-img1.png")


def test_unknown_names_and_the_annotation_lookup_order(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown split 'minival' for nlvr2 \(expected one of: train, dev, test1, test2\)"):
        D.load_dataset("nlvr2", ["dev", "minival"])
    with pytest.raises(ValueError, match="unknown dataset 'vqa'"):
        D.load_dataset("vqa", "train")
    home = tmp_path / "home"
    monkeypatch.setattr(D, "_data_home", lambda: str(home))
    downloads = []

    def fake_download(name, source, root, path):
        downloads.append((name, source.url, source.md5, root))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write('{"identifier": "dev-1-0-0", "sentence": "from home", "label": "False"}\n')

    monkeypatch.setattr(D, "_download", fake_download)
    # a data root without annotations: the data home is used, filled by the (here faked) download from the original scripts' URL
    (tmp_path / "bare").mkdir()
    ds = D.load_dataset("nlvr2", "dev", input_dir=str(tmp_path / "bare"))
    assert ds[0]["sentence"] == "from home"
    assert downloads == [("nlvr2", "https://gitee.com/njcky/nlvr2/raw/master/annotations.tar.gz",
                          "319870abbc37d77cf394bcc3e9a4dd92", str(home / "NLVR2"))]
    # <input_dir>/annotations wins over the data home, --annotation_dir over both
    (tmp_path / "in" / "annotations").mkdir(parents=True)
    (tmp_path / "in" / "annotations" / "dev.json").write_text('{"identifier": "dev-1-0-0", "sentence": "input", "label": "True"}\n')
    assert D.load_dataset("nlvr2", "dev", input_dir=str(tmp_path / "in"))[0]["sentence"] == "input"
    with pytest.raises(FileNotFoundError, match=r"explicit/dev.json: nlvr2 dev annotation file not found \(--annotation_dir\)"):
        D.load_dataset("nlvr2", "dev", input_dir=str(tmp_path / "in"), annotation_dir=str(tmp_path / "explicit"))
    with pytest.raises(FileNotFoundError, match="pass --annotation_dir"):
        D.annotation_path("nlvr2", "train", download=False)


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    import paddle.utils.download as dl

    def offline(url, root_dir, md5sum=None, **kw):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(dl, "get_path_from_url", offline)
    monkeypatch.setattr(D, "_data_home", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        D.load_dataset("vqa2", "minival")
    msg = str(e.value)
    assert "imdb_minival2014.npy: not found and downloading https://dl.fbaipublicfiles.com/mmf/data/datasets/vqa2/defaults/" \
           "annotations/annotations.tar.gz failed (ConnectionError: network unreachable)" in msg
    assert "\n" not in msg
