"""Own data as users lay it out: COCO's train2014/ and val2014/ folders under one store, string image ids,
an id -> key map, and the line that says a key is missing."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from helpers import write_json
from visualbert import cli, tasks
from visualbert import examples as D
from visualbert.extract import extract
from visualbert.features import open_feature_dir
from visualbert.formats.vqa import read_image_map


def vqa_files(tmp_path, name, image_ids):
    """One question per image, answered by ten humans."""
    questions = [{"image_id": i, "question": "what is it?", "question_id": n + 1 + 100 * (name == "val")}
                 for n, i in enumerate(image_ids)]
    annotations = [{"question_id": q["question_id"], "image_id": q["image_id"],
                    "answers": [{"answer": "dog"}] * 10} for q in questions]
    return (write_json(tmp_path / f"{name}_q.json", {"questions": questions}),
            write_json(tmp_path / f"{name}_a.json", {"annotations": annotations}))


@pytest.fixture(scope="module")
def coco_store(tmp_path_factory):
    """A store extracted from COCO-style folders: keys train2014/COCO_train2014_<id:012d>, val2014/..."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    for split, ids in (("train2014", (9, 25)), ("val2014", (7,))):
        os.makedirs(root / "images" / split)
        for i in ids:
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                root / "images" / split / f"COCO_{split}_{i:012d}.jpg")
    store = str(root / "store")
    extract(str(root / "images"), store, backbone="patches", image_size=16, patch_size=8, num_workers=0, progress=False)
    return root, store


def finetune_args(tmp_path, *flags):
    train_q, train_a = vqa_files(tmp_path, "train", (9, 25))
    val_q, val_a = vqa_files(tmp_path, "val", (7,))
    task, _ = cli.parse_finetune_args("vqa2", "", [
        "--train_questions", train_q, "--train_annotations", train_a, "--eval_questions", val_q,
        "--eval_annotations", val_a, "--output_dir", str(tmp_path / "run"), *flags])
    return task


def test_train_and_eval_image_keys_address_two_folders(coco_store, tmp_path):
    _, store = coco_store
    features = open_feature_dir(store)
    args = finetune_args(tmp_path, "--train_image_key", "train2014/COCO_train2014_{image_id:012d}",
                         "--eval_image_key", "val2014/COCO_val2014_{image_id:012d}")
    train, held_out = tasks.vqa_json_examples(args)
    assert [ex["image_key"] for ex in train] == ["train2014/COCO_train2014_000000000009",
                                                 "train2014/COCO_train2014_000000000025"]
    assert [ex["image_key"] for ex in held_out] == ["val2014/COCO_val2014_000000000007"]
    tasks.check_features_exist(train, features, "vqa2", "train")
    tasks.check_features_exist(held_out, features, "vqa2", "eval")


def test_the_eval_set_falls_back_to_image_key_and_a_missing_key_shows_the_store_and_template(coco_store, tmp_path):
    _, store = coco_store
    features = open_feature_dir(store)
    args = finetune_args(tmp_path, "--image_key", "train2014/COCO_train2014_{image_id:012d}")
    train, held_out = tasks.vqa_json_examples(args)
    assert held_out[0]["image_key"] == "train2014/COCO_train2014_000000000007"  # the shared template
    with pytest.raises(FileNotFoundError) as e:
        tasks.check_features_exist(held_out, features, "vqa2", "eval", tasks.key_origin(args, "eval"))
    message = str(e.value)
    assert "\n" not in message
    assert "no region features for image train2014/COCO_train2014_000000000007 (needed by vqa2 eval question_id 101)" in message
    assert "the features have keys such as 'train2014/COCO_train2014_000000000009'" in message
    assert message.endswith("the key was made with --image_key 'train2014/COCO_train2014_{image_id:012d}'")


def test_string_image_ids_work_with_a_template_and_with_a_map(tmp_path):
    q = write_json(tmp_path / "q.json", {"questions": [{"image_id": "grace_hopper", "question": "who?", "question_id": 1}]})
    assert D.read_vqa_json(q, image_key="photos/{image_id}")[0]["image_key"] == "photos/grace_hopper"
    mapping = write_json(tmp_path / "map.json", {"grace_hopper": "people/IMG_0042"})
    assert D.read_vqa_json(q, image_map=read_image_map(mapping))[0]["image_key"] == "people/IMG_0042"
    with pytest.raises(ValueError, match=r"--image_key '\{image_id:012d\}': cannot format image_id 'grace_hopper'"):
        D.read_vqa_json(q, image_key="{image_id:012d}")
    other = write_json(tmp_path / "other.json", {"ada": "people/ada"})
    with pytest.raises(ValueError, match=r"question 0 \(question_id 1\): --image_map .*other.json has no key for "
                                         r"image_id 'grace_hopper'"):
        D.read_vqa_json(q, image_map=read_image_map(other))


def test_image_map_flag_reaches_the_reader_and_bad_maps_are_one_line(tmp_path):
    mapping = write_json(tmp_path / "map.json", {"9": "a", "25": "b", "7": "c"})
    args = finetune_args(tmp_path, "--image_map", mapping)
    train, held_out = tasks.vqa_json_examples(args)
    assert [ex["image_key"] for ex in train + held_out] == ["a", "b", "c"]
    assert tasks.key_origin(args, "train") == f"--image_map {mapping}"
    for payload, match in (([1, 2], "expected --image_map, a non-empty JSON object"), ({"9": 4}, "the key of image_id '9' must be a "
                                                                                   "non-empty string")):
        with pytest.raises(ValueError, match=match):
            read_image_map(write_json(tmp_path / "bad.json", payload))


@pytest.mark.parametrize("template", ["{image_id.nope}", "{image_id[0]}", "{image_id!z}"])
def test_a_template_that_cannot_format_an_id_is_one_line(tmp_path, template):
    q = write_json(tmp_path / "q.json", {"questions": [{"image_id": 7, "question": "?", "question_id": 1}]})
    with pytest.raises(ValueError) as e:
        D.read_vqa_json(q, image_key=template)
    assert str(e.value).startswith(f"--image_key {template!r}: cannot format image_id 7") and "\n" not in str(e.value)


def test_training_and_prediction_on_string_image_ids_through_an_image_map(coco_store, tiny_config, tmp_path):
    _, store = coco_store
    names = {"rex": "train2014/COCO_train2014_000000000009", "tom": "train2014/COCO_train2014_000000000025",
             "ada": "val2014/COCO_val2014_000000000007"}
    mapping = write_json(tmp_path / "map.json", names)
    train_q, train_a = vqa_files(tmp_path, "train", ("rex", "tom"))
    val_q, val_a = vqa_files(tmp_path, "val", ("ada",))
    run = tmp_path / "run"
    fast = ["--device", "cpu", "--num_workers", "0"]
    run_script(["VQA2/run_vqa2.py", "--train_questions", train_q, "--train_annotations", train_a, "--eval_questions",
                val_q, "--eval_annotations", val_a, "--features", store, "--image_map", mapping, "--answer_vocab",
                "build", "--model_name_or_path", tiny_config(0.0), "--output_dir", str(run), "--max_steps", "2",
                "--batch_size", "2", *fast])
    proc = run_script(["VQA2/run_predict.py", "--questions", val_q, "--annotations", val_a, "--features", store,
                       "--image_map", mapping, "--model_name_or_path", str(run / "best"), *fast])
    result = run / "result_val_q.json"  # beside the run, named after the questions file
    assert f"wrote 1 answers to {result}" in proc.stdout
    assert [r["question_id"] for r in json.loads(result.read_text())] == [101]
