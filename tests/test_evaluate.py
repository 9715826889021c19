"""The evaluate command line, run as users run it: a subprocess, JSON on stdout, one-line errors."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NLVR2_DEV = os.path.join(REPO, "tests", "data", "nlvr2_dev.json")


def evaluate(*args):
    return subprocess.run([sys.executable, "-m", "visualbert.evaluate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def vqa_files(tmp_path):
    def annotation(qid, answers, answer_type, question_type):
        return {"question_id": qid, "image_id": 1, "answer_type": answer_type, "question_type": question_type,
                "multiple_choice_answer": answers[0],
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}

    ann = tmp_path / "v2_mscoco_val2014_annotations.json"
    ann.write_text(json.dumps({"annotations": [
        annotation(1, ["2"] * 3 + ["3"] * 7, "number", "how many"),     # "two" -> 0.9
        annotation(2, ["yes"] * 10, "yes/no", "is the"),                 # "Yes." -> 0.0 (all agree: verbatim)
        annotation(3, ["red"] * 2 + ["blue"] * 8, "other", "what color"),  # "red" -> 0.6
    ]}))
    questions = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    questions.write_text(json.dumps({"questions": [
        {"question_id": q, "image_id": 1, "question": "?"} for q in (1, 2, 3)]}))
    result = tmp_path / "result.json"
    result.write_text(json.dumps([{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "Yes."},
                                  {"question_id": 3, "answer": "red"}]))
    return ann, questions, result


def test_vqa_prints_official_scores(vqa_files):
    ann, questions, result = vqa_files
    proc = evaluate("vqa", "--result", result, "--annotations", ann, "--questions", questions)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["num_questions"] == 3
    # (0.9 + 0.0 + 0.6) / 3 = 0.5
    assert out["percent"] == {
        "overall": 50.0,
        "per_answer_type": {"number": 90.0, "yes/no": 0.0, "other": 60.0},
        "per_question_type": {"how many": 90.0, "is the": 0.0, "what color": 60.0},
    }
    assert out["fraction"]["overall"] == pytest.approx(0.5)
    assert out["fraction"]["per_answer_type"]["number"] == pytest.approx(0.9)


def test_vqa_mismatched_ids(vqa_files, tmp_path):
    ann, _, _ = vqa_files
    result = tmp_path / "partial.json"
    result.write_text(json.dumps([{"question_id": 1, "answer": "2"}, {"question_id": 99, "answer": "2"}]))
    proc = evaluate("vqa", "--result", result, "--annotations", ann)
    assert_one_line_error(proc, "partial.json", "2 question ids missing", "(e.g. 2, 3)", "1 question ids", "(e.g. 99)")


def test_vqa_imdb_ground_truth_has_no_breakdowns(tmp_path):
    imdb = tmp_path / "imdb_val2014.npy"
    np.save(imdb, np.array([{"version": 1}, {"question_id": 4, "question_str": "?", "image_id": 1,
                                             "answers": ["cat"] * 9 + ["kitten"]}], dtype=object), allow_pickle=True)
    result = tmp_path / "result.json"
    # the humans differ, so "a cat" is normalised to "cat" and matches nine of them
    result.write_text(json.dumps([{"question_id": 4, "answer": "a cat"}]))
    proc = evaluate("vqa", "--result", result, "--annotations", imdb)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"num_questions": 1, "percent": {"overall": 100.0}, "fraction": {"overall": 1.0}}


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_vqa_refuses_imdb_that_would_run_code(tmp_path):
    imdb = tmp_path / "evil.npy"
    np.save(imdb, np.array([{"version": 1}, _RunsCode()], dtype=object), allow_pickle=True)
    result = tmp_path / "result.json"
    result.write_text("[]")
    proc = evaluate("vqa", "--result", result, "--annotations", imdb)
    assert_one_line_error(proc, "evil.npy", "refusing to load")


def test_vqa_missing_file(tmp_path, vqa_files):
    ann, _, _ = vqa_files
    proc = evaluate("vqa", "--result", tmp_path / "absent.json", "--annotations", ann)
    assert_one_line_error(proc, "absent.json: no such file")


def _write_predictions(path, labels):
    path.write_text("".join(f"{i},{v}\n" for i, v in labels.items()))


def _dev_labels():
    with open(NLVR2_DEV) as f:
        return {e["identifier"]: e["label"] for e in map(json.loads, f)}


def test_nlvr2_all_correct(tmp_path):
    predictions = tmp_path / "p.csv"
    _write_predictions(predictions, _dev_labels())
    proc = evaluate("nlvr2", "--predictions", predictions, "--labels", NLVR2_DEV)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["accuracy"], out["consistency"], out["num_examples"]) == (1.0, 1.0, 6982)


def test_nlvr2_missing_predictions(tmp_path):
    labels = _dev_labels()
    dropped = list(labels)[:3]
    for identifier in dropped:
        del labels[identifier]
    predictions = tmp_path / "p.csv"
    _write_predictions(predictions, labels)
    proc = evaluate("nlvr2", "--predictions", predictions, "--labels", NLVR2_DEV)
    assert_one_line_error(proc, "3 identifiers missing from the predictions", dropped[0])


def test_nlvr2_extra_predictions(tmp_path):
    labels = _dev_labels()
    labels["dev-99999-0-0"] = "True"
    predictions = tmp_path / "p.csv"
    _write_predictions(predictions, labels)
    proc = evaluate("nlvr2", "--predictions", predictions, "--labels", NLVR2_DEV)
    assert_one_line_error(proc, "1 identifiers in the predictions are not in the labels", "dev-99999-0-0")


def test_nlvr2_missing_labels_file(tmp_path):
    predictions = tmp_path / "p.csv"
    predictions.write_text("dev-1-0-0,True\n")
    proc = evaluate("nlvr2", "--predictions", predictions, "--labels", tmp_path / "dev.json")
    assert_one_line_error(proc, "dev.json: no such file")


@pytest.mark.parametrize("args, expected", [
    ((), ["vqa", "nlvr2"]),
    (("vqa",), ["--result", "--annotations", "--questions", "vqaEval"]),
    (("nlvr2",), ["--predictions", "--labels", "consistency"]),
])
def test_help(args, expected):
    proc = evaluate(*args, "--help")
    assert proc.returncode == 0
    for word in expected:
        assert word in proc.stdout


def test_nlvr2_reads_a_csv_saved_with_a_byte_order_mark_and_prints_rounded_scores(tmp_path):
    labels = _dev_labels()
    first = next(iter(labels))
    labels[first] = "False" if labels[first] == "True" else "True"  # one wrong: 6981 / 6982 right
    plain = tmp_path / "p.csv"
    _write_predictions(plain, labels)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # as spreadsheets save CSV
    proc = evaluate("nlvr2", "--predictions", bom, "--labels", NLVR2_DEV)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["accuracy"] == round(6981 / 6982, 6) == 0.999857
    assert not re.search(r"\d\.\d{7,}", proc.stdout), proc.stdout
