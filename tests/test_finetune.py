"""VQA2 and NLVR2 fine-tuning and prediction end to end on the demo data (tiny model, CPU).

Short runs: these prove the mechanics (prediction files, their scores equal training's evaluation,
errors). That fine-tuning reaches the accuracy bars is proven by the demo test (tests/test_demo_sh.py),
which trains longer through the user's own scripts.
"""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_script
from visualbert.examples import load_dataset
from visualbert.formats.nlvr2 import read_nlvr2_predictions
from visualbert.plot import read_metrics

pytestmark = pytest.mark.slow  # every test here runs the scripts end to end

FAST = ["--device", "cpu", "--num_workers", "0", "--logging_steps", "10", "--save_steps", "1000", "--seed", "1"]


@pytest.fixture(scope="module")
def vqa_run(demo_dir, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa")
    proc = run_script(["VQA2/run_vqa2.py", "--input_dir", str(demo_dir / "X_COCO"), "--output_dir", str(out),
                       "--model_name_or_path", tiny_config(0.0), "--train_split", "train", "--eval_split", "val",
                       "--batch_size", "32", "--learning_rate", "3e-3", "--num_train_epochs", "2", *FAST])
    return out, proc


@pytest.fixture(scope="module")
def nlvr2_run(demo_dir, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("nlvr2")
    proc = run_script(["NLVR2/run_nlvr2.py", "--input_dir", str(demo_dir / "X_NLVR"), "--output_dir", str(out),
                       "--model_name_or_path", tiny_config(0.0), "--batch_size", "64", "--learning_rate", "3e-3",
                       "--max_steps", "30", *FAST])
    return out, proc


def best_eval(run_dir):
    with open(os.path.join(run_dir, "best", "eval_results.json")) as f:
        return json.load(f)


def test_vqa_prediction_reproduces_training_eval(vqa_run, demo_dir, tmp_path):
    out, _ = vqa_run
    best = best_eval(out)
    assert best["vqa_accuracy"] > 0.3, best  # well above chance even this short; the demo test asks for 0.9
    evals = [r["eval_vqa_accuracy"] for r in read_metrics(out) if "eval_vqa_accuracy" in r]
    assert max(evals) == best["vqa_accuracy"]

    result = tmp_path / "result_val.json"
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"), "--model_name_or_path",
                       str(out / "best"), "--split", "val", "--output", str(result), "--device", "cpu"])
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["vqa_accuracy"] == pytest.approx(best["vqa_accuracy"], abs=1e-9)
    # the official-metric CLI scores the written file to the same number (it prints 6 decimals)
    proc = run_script(["-m", "visualbert.evaluate", "vqa", "--result", str(result), "--annotations",
                       str(demo_dir / "X_COCO" / "annotations" / "imdb_val2014.npy")])
    assert json.loads(proc.stdout)["fraction"]["overall"] == round(best["vqa_accuracy"], 6)


def test_vqa_result_json_covers_test_split_exactly(vqa_run, demo_dir, tmp_path):
    out, _ = vqa_run
    result = tmp_path / "result.json"
    run_script(["VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"), "--model_name_or_path", str(out),
                "--split", "test", "--output", str(result), "--device", "cpu"])
    rows = json.loads(result.read_text())
    test_ids = {int(ex["question_id"]) for ex in load_dataset("vqa2", "test", input_dir=str(demo_dir / "X_COCO"))}
    assert sorted(r["question_id"] for r in rows) == sorted(test_ids)
    assert all(isinstance(r["question_id"], int) and r["answer"] and r["answer"] != "<unk>" for r in rows)


def test_missing_test_feature_is_named_and_leaves_no_result(demo_dir, vqa_run, tmp_path):
    out, _ = vqa_run
    data = tmp_path / "X_COCO"
    shutil.copytree(demo_dir / "X_COCO", data)
    test_dir = data / "data" / "detectron_fix_100" / "fc6" / "vqa" / "test2015"
    victim = sorted(os.listdir(test_dir))[3]
    os.remove(test_dir / victim)
    result = tmp_path / "result.json"
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(data), "--model_name_or_path", str(out),
                       "--split", "test", "--output", str(result), "--device", "cpu"], check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and victim[:-len(".npy")] in last and "question_id" in last
    assert not result.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_nlvr2_prediction_csv_is_complete_and_scores_as_training(nlvr2_run, demo_dir, tmp_path):
    out, _ = nlvr2_run
    best = best_eval(out)
    for split in ("dev", "test1"):
        csv_path = tmp_path / f"{split}.csv"
        proc = run_script(["NLVR2/run_predict.py", "--input_dir", str(demo_dir / "X_NLVR"), "--model_name_or_path",
                           str(out / "best"), "--split", split, "--output", str(csv_path), "--device", "cpu"])
        printed = json.loads(proc.stdout.strip().splitlines()[-1])
        ids = [ex["identifier"] for ex in load_dataset("nlvr2", split, input_dir=str(demo_dir / "X_NLVR"))]
        assert sorted(read_nlvr2_predictions(str(csv_path))) == sorted(ids)
        labels = demo_dir / "X_NLVR" / "annotations" / f"{split}.json"
        scored = json.loads(run_script(["-m", "visualbert.evaluate", "nlvr2", "--predictions", str(csv_path),
                                        "--labels", str(labels)]).stdout)
        assert scored["accuracy"] == round(printed["accuracy"], 6)  # evaluate prints 6 decimals
        assert scored["consistency"] == round(printed["consistency"], 6)
        if split == "dev":
            assert printed["accuracy"] == pytest.approx(best["accuracy"], abs=1e-12)


def _tiny_vocab(path, words):
    """A vocab.txt small enough for the HF fixture's 100-token embedding table."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(specials + sorted(words)[: 100 - len(specials)]) + "\n")


def test_finetune_from_converted_hf_checkpoint(demo_dir, tmp_path):
    """The tiny HF VQA fixture -> visualbert.convert -> run_vqa2 -> run_predict, end to end."""
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", "hf", "vqa")
    with open(os.path.join(fixture, "config.json")) as f:
        hf_config = json.load(f)
    converted = tmp_path / "converted"
    run_script(["-m", "visualbert.convert", "--src", fixture, "--dst", str(converted)])

    # the same demo data, with features cut to the fixture's visual dim and its own small vocabularies
    dim = hf_config["visual_embedding_dim"]
    data = tmp_path / "X_COCO"
    shutil.copytree(demo_dir / "X_COCO" / "annotations", data / "annotations")
    src_root = demo_dir / "X_COCO" / "data" / "detectron_fix_100"
    for root, _, files in os.walk(src_root):
        for name in files:
            target = data / "data" / "detectron_fix_100" / os.path.relpath(os.path.join(root, name), src_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, np.load(os.path.join(root, name))[:, :dim])
    from visualbert.demo import COLORS, OBJECTS

    vocab = tmp_path / "vocab.txt"
    _tiny_vocab(vocab, ["what", "is", "in", "the", "picture", "color", "it", "?", "this", "shown", "photo", "of",
                        "thing", "object", "a", *OBJECTS, *COLORS])
    answers = tmp_path / "answers.txt"
    answers.write_text("\n".join(["<unk>", *OBJECTS[:hf_config_labels(hf_config) - 1]]))
    out = tmp_path / "run"
    run_script(["VQA2/run_vqa2.py", "--input_dir", str(data), "--output_dir", str(out), "--model_name_or_path",
                str(converted), "--bert_model_name", str(vocab), "--answer_vocab", str(answers),
                "--max_seq_length", "32", "--batch_size", "16", "--max_steps", "4", "--eval_split", "val", *FAST])
    result = tmp_path / "result.json"
    run_script(["VQA2/run_predict.py", "--input_dir", str(data), "--model_name_or_path", str(out), "--split", "val",
                "--bert_model_name", str(vocab), "--answer_vocab", str(answers), "--max_seq_length", "32",
                "--output", str(result), "--device", "cpu"])
    rows = json.loads(result.read_text())
    assert len(rows) == len(load_dataset("vqa2", "val", input_dir=str(data)))
    assert {r["answer"] for r in rows} <= set(OBJECTS)


def hf_config_labels(config):
    return len(config["id2label"])
