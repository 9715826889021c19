"""benchmarks/easy_vqa.py turns easy-VQA's package layout into official VQA JSON files that the
VQA readers take: unique question ids across splits, ten answers, answer and question types."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import easy_vqa  # noqa: E402
from visualbert.formats.vqa import read_vqa_ground_truth  # noqa: E402


def _package(tmp_path):
    data = tmp_path / "data"
    rows = {"train": [["what is the blue shape?", "rectangle", 0], ["what color is the shape?", "blue", 0],
                      ["is there a triangle in the image?", "no", 1], ["is there not a black shape?", "yes", 1]],
            "test": [["what shape is present?", "circle", 0], ["is there a red shape?", "no", 0]]}
    for split, questions in rows.items():
        (data / split / "images").mkdir(parents=True)
        (data / split / "questions.json").write_text(json.dumps(questions))
    return data


def test_convert_writes_official_files_with_distinct_ids_and_types(tmp_path):
    counts = easy_vqa.convert(str(_package(tmp_path)), str(tmp_path / "out"))
    assert counts == {"train": 4, "test": 2}
    train_q = json.loads((tmp_path / "out" / "train_questions.json").read_text())["questions"]
    test_q = json.loads((tmp_path / "out" / "test_questions.json").read_text())["questions"]
    # both files number their rows from 0: the ids must not collide, or training drops the test questions
    assert not {q["question_id"] for q in train_q} & {q["question_id"] for q in test_q}
    truth = read_vqa_ground_truth(str(tmp_path / "out" / "train_annotations.json"))
    by_question = {q["question"]: truth[q["question_id"]] for q in train_q}
    assert by_question["what is the blue shape?"]["answers"] == ["rectangle"] * 10
    assert [(by_question[q]["answer_type"], by_question[q]["question_type"]) for q in (
        "what is the blue shape?", "what color is the shape?", "is there a triangle in the image?",
        "is there not a black shape?")] == [("shape", "what shape"), ("color", "what color"),
                                            ("yes/no", "yes/no shape"), ("yes/no", "yes/no color")]


def test_train_limit_keeps_the_first_images(tmp_path):
    counts = easy_vqa.convert(str(_package(tmp_path)), str(tmp_path / "out"), train_limit=1)
    assert counts == {"train": 2, "test": 2}


def test_wrong_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="package's data/ folder"):
        easy_vqa.convert(str(tmp_path), str(tmp_path / "out"))
