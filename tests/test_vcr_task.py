"""VCR from the demo's files to the leaderboard CSV: the released formats, the dataset, and the scripts."""
import csv
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from visualbert.formats import vcr as vcr_format
from visualbert.demo_vcr import VCR_COLORS, write_vcr_demo
from visualbert.inputs import ExampleError, get_tokenizer
from visualbert.vcr_dataset import VCRDataset, VCRPretrainDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "visualbert-tiny-vcr.json")
SIZES = {"train": 24, "val": 8, "test": 4}


@pytest.fixture(scope="module")
def vcr_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vcr") / "X_VCR"
    root.mkdir()
    write_vcr_demo(str(root), seed=0, sizes=SIZES)
    return root


def test_demo_writes_the_released_formats_with_the_answer_in_the_image(vcr_dir):
    items = vcr_format.read_vcr(vcr_dir / "val.jsonl")
    assert vcr_format.read_vcr(vcr_dir / "test.jsonl", need_labels=False)[0]["answer_label"] is None
    for item in items:
        meta = vcr_format.read_vcr_metadata(vcr_dir / "vcr1images" / item["metadata_fn"], len(item["objects"]))
        x1, y1, x2, y2 = meta["boxes"][0, :4].astype(int)
        with Image.open(vcr_dir / "vcr1images" / item["img_fn"]) as image:
            assert image.size == (meta["width"], meta["height"])
            colour = np.asarray(image)[(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
        nearest = min(VCR_COLORS, key=lambda c: np.abs(np.array(VCR_COLORS[c]) - colour).sum())
        right_answer = item["answer_choices"][item["answer_label"]]
        assert right_answer[3] == nearest  # [[0], "is", "wearing", <colour>, "."]
        assert item["rationale_choices"][item["rationale_label"]][5] == nearest


def test_same_seed_same_bytes(tmp_path):
    digests = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_vcr_demo(str(tmp_path / name), seed=3, sizes={"val": 3})
        digests.append(hashlib.sha256((tmp_path / name / "val.jsonl").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_dataset_sample_aligns_the_person_box_and_reads_the_image(vcr_dir):
    items = vcr_format.read_vcr(vcr_dir / "val.jsonl")
    ds = VCRDataset(items, get_tokenizer(), str(vcr_dir / "vcr1images"), "answer", image_size=(96, 48))
    sample = ds[0]
    tokenizer = get_tokenizer()
    assert sample["input_ids"].shape[0] == 4 and sample["images"].shape == (3, 48, 96)
    # kept: the whole image and the person (the car is never mentioned)
    assert sample["boxes"].shape == (2, 4) and sample["box_classes"].tolist() == [0, 1]
    tokens = tokenizer.convert_ids_to_tokens(sample["input_ids"][0].tolist())
    assert tokens[:8] == ["[CLS]", "what", "color", "is", "casey", "wearing", "?", "[SEP]"]
    assert sample["image_text_alignment"][0, 1].tolist() == [4, 8]  # casey in the question and in the answer
    assert (sample["image_text_alignment"][0, 0] == -1).all()
    assert int(sample["labels"]) == items[0]["answer_label"]
    batch = ds.collate_fn()([ds[0], ds[1]])
    assert batch["input_ids"].shape[:2] == (2, 4) and batch["annot_id"] == [items[0]["annot_id"], items[1]["annot_id"]]
    pre = VCRPretrainDataset(items, tokenizer, str(vcr_dir / "vcr1images"), image_size=(96, 48))
    assert len(pre) == 8 * len(items) and (pre[5]["labels"] != -100).any()


def test_a_broken_metadata_file_names_itself_and_the_question(vcr_dir, tmp_path):
    items = vcr_format.read_vcr(vcr_dir / "val.jsonl")
    images = tmp_path / "vcr1images"
    folder = os.path.dirname(items[0]["metadata_fn"])
    (images / folder).mkdir(parents=True)
    (images / items[0]["metadata_fn"]).write_text('{"boxes": [\n')
    missing = rf"{items[0]['img_fn']}: no such file .*annot_id {items[0]['annot_id']}"
    with pytest.raises(FileNotFoundError, match=missing):
        VCRDataset(items[:1], get_tokenizer(), str(images), "answer")  # found up front, before any training
    (images / items[0]["img_fn"]).write_bytes((vcr_dir / "vcr1images" / items[0]["img_fn"]).read_bytes())
    ds = VCRDataset(items[:1], get_tokenizer(), str(images), "answer", image_size=(96, 48))
    with pytest.raises(ExampleError, match=rf"{os.path.basename(items[0]['metadata_fn'])}: not valid JSON \(.* at line 2 .*"
                                           rf"annot_id {items[0]['annot_id']}"):
        ds[0]


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_finetune_predict_evaluate_and_pretrain_end_to_end(vcr_dir, tmp_path):
    common = ["--input_dir", vcr_dir, "--model_name_or_path", TINY, "--batch_size", "4", "--max_steps", "3",
              "--device", "cpu", "--num_workers", "0", "--learning_rate", "1e-3"]
    for mode in ("answer", "rationale"):
        run("VCR/run_vcr.py", "--mode", mode, "--output_dir", tmp_path / mode, *common)
        assert json.load(open(tmp_path / mode / "best" / "eval_results.json"))["accuracy"] >= 0
    out = tmp_path / "val.csv"
    printed = run("VCR/run_predict.py", "--input_dir", vcr_dir, "--split", "val", "--answer_model", tmp_path / "answer",
                  "--rationale_model", tmp_path / "rationale", "--output", out, "--device", "cpu", "--num_workers", "0")
    with open(out) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == vcr_format.VCR_CSV_COLUMNS and len(rows) == 1 + SIZES["val"]
    for row in rows[1:]:  # probabilities of the four answers, and of the four rationales given each answer
        values = np.array(row[1:], dtype=float).reshape(5, 4)
        np.testing.assert_allclose(values.sum(1), 1, rtol=1e-5)
    scores = json.loads(run("-m", "visualbert.evaluate", "vcr", "--predictions", out,
                            "--labels", vcr_dir / "val.jsonl"))
    assert json.loads(printed.strip().splitlines()[-1])["q_ar"] == scores["q_ar"]
    run("run_pretrain.py", "--dataset", "vcr", "--input_dir", vcr_dir, "--model_name_or_path", TINY,
        "--output_dir", tmp_path / "pre", "--train_batch_size", "4", "--max_steps", "2", "--device", "cpu",
        "--num_workers", "0", "--max_eval_samples", "8")
    assert "mlm_accuracy" in json.load(open(tmp_path / "pre" / "best" / "eval_results.json"))


def parse_script(script, argv):
    import importlib.util

    spec = importlib.util.spec_from_file_location("vcr_" + os.path.basename(script)[:-3], os.path.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # one namespace of the settings objects the script hands on, to read any setting by name
    return types.SimpleNamespace(**{k: v for s in module.parse_args(argv) for k, v in dataclasses.asdict(s).items()})


@pytest.mark.parametrize("script,argv,message", [
    ("VCR/run_vcr.py", ["--output_dir", "o"], "the following arguments are required: --mode"),
    ("VCR/run_vcr.py", ["--output_dir", "o", "--mode", "answer", "--batch_size", "0"],
     "argument --batch_size: expected an integer >= 1, got 0"),
    ("VCR/run_vcr.py", ["--output_dir", "o", "--mode", "answer", "--class_loss_ratio", "-1"],
     "argument --class_loss_ratio: expected a number >= 0, got -1"),
    ("VCR/run_predict.py", ["--answer_model", "a"], "the following arguments are required: --rationale_model"),
])
def test_bad_vcr_command_lines_are_one_usage_error(script, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_script(script, argv)
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith(message), errors


def test_vcr_command_line_defaults():
    args = parse_script("VCR/run_vcr.py", ["--output_dir", "o", "--mode", "rationale", "--eval_split", "none"])
    assert (args.input_dir, args.eval_batch_size, args.train_batch_size, args.eval_split) == ("X_VCR", 8, 8, None)
    assert (args.learning_rate, args.num_train_epochs, args.model_name_or_path) == (2e-5, 8, "visualbert-vcr-pre")
    args = parse_script("VCR/run_predict.py", ["--answer_model", "a", "--rationale_model", "r", "--split", "val"])
    assert args.output == os.path.join("VCR", "predictions_val.csv")


def test_the_demo_never_replaces_vcr_data_it_did_not_write(tmp_path):
    from visualbert import demo

    (tmp_path / "X_VCR").mkdir()
    (tmp_path / "X_VCR" / "train.jsonl").write_text("real data\n")
    with pytest.raises(ValueError, match=r"X_VCR/train.jsonl exists and was not written by the demo"):
        demo.write_demo(str(tmp_path), progress=False)
    assert (tmp_path / "X_VCR" / "train.jsonl").read_text() == "real data\n"
    assert not (tmp_path / "X_COCO").exists()
