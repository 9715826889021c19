"""Metric tests. Expected values are worked out by hand from the official scorers' rules."""
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from visualbert.formats.nlvr2 import nlvr2_sentence_key, read_nlvr2_labels, read_nlvr2_predictions
from visualbert.formats.vqa import read_vqa_ground_truth, read_vqa_result
from visualbert.metrics import (
    nlvr2_scores,
    normalize_vqa_answer,
    vqa_accuracy,
    vqa_question_accuracy,
    vqa_soft_score,
)

NLVR2_DEV = os.path.join(os.path.dirname(__file__), "data", "nlvr2_dev.json")


# ---- answer normalisation -------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    # newlines and tabs are spaces; ends stripped; inner runs of spaces collapse
    ("yes\n", "yes"),
    ("\tblue\tcar\n", "blue car"),
    # a mark inside a word becomes a space ...
    ("black/white", "black white"),
    ("t-shirt", "t shirt"),
    # ... but once that mark touches a space anywhere, every copy of it is deleted
    ("t-shirt - yes", "tshirt yes"),
    ("yes , it is", "yes it is"),
    # a "1,000"-style number deletes all punctuation, commas and the rest alike
    ("1,000", "1000"),
    ("1,000 t-shirts", "1000 tshirts"),
    ("red,blue", "red blue"),
    # periods go unless a digit follows
    ("3.5", "3.5"),
    (".5", ".5"),
    ("5.", "5"),
    ("yes.", "yes"),
    ("u.s.", "us"),
    # number words up to ten become digits; "none" counts as zero
    ("Two", "2"),
    ("none", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),
    # articles go, wherever they are
    ("The red car", "red car"),
    ("an apple", "apple"),
    ("a", ""),
    # contractions typed without their apostrophe get it back
    ("dont", "don't"),
    ("Dont know", "don't know"),
    ("couldnt've", "couldn't've"),
    ("couldn'tve", "couldn't've"),
    ("twas", "'twas"),
    # apostrophes are not punctuation here, so typed contractions survive untouched
    ("don't", "don't"),
    # official oddities: capitalised keys never fire after lowercasing, and one entry runs backwards
    ("Im", "im"),
    ("couldntve", "couldntve"),
    ("somebody'd", "somebodyd"),
])
def test_normalize_vqa_answer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_contraction_table_equals_the_official_one_entry_by_entry():
    """Our table is generated from the list of contractions; the official scorer's is written out."""
    from visualbert.metrics import _CONTRACTIONS

    with open(os.path.join(os.path.dirname(__file__), "data", "vqaeval_contractions.json")) as f:
        official = json.load(f)["contractions"]
    assert len(official) == 120
    for typed, contraction in official.items():
        assert _CONTRACTIONS.get(typed) == contraction, typed
    assert set(_CONTRACTIONS) == set(official)


def test_period_strip_stops_after_32_periods():
    # vqaEval passes re.UNICODE (32) where re.sub expects a count
    assert normalize_vqa_answer("x" + "." * 40) == "x" + "." * 8


# ---- per-question score ---------------------------------------------------------------------

def test_soft_score_values():
    # m matches of 10: the m left-out-a-match subsets keep m-1, the other 10-m keep m.
    # m=1: (1*0 + 9*1/3)/10 = .3; m=2: (2*1/3 + 8*2/3)/10 = .6; m=3: (3*2/3 + 7*1)/10 = .9
    expected = [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [vqa_soft_score(m) for m in range(11)] == pytest.approx(expected)
    with pytest.raises(ValueError, match="between 0 and 10"):
        vqa_soft_score(11)


def test_repeated_human_answers_count_once_each():
    answers = ["2"] * 3 + ["3"] * 7
    assert vqa_question_accuracy("two", answers) == pytest.approx(0.9)
    assert vqa_question_accuracy("3", answers) == pytest.approx(1.0)
    assert vqa_question_accuracy("4", answers) == 0.0


# vqaEval since commit a013f00: whitespace is cleaned on both sides always; everything else only
# when the ten (cleaned) human answers are not all the same, and then on both sides.

@pytest.mark.parametrize("prediction, answers, expected", [
    # all ten agree: the prediction must be their answer exactly, case and punctuation included
    ("yes", ["yes"] * 10, 1.0),
    ("Yes", ["yes"] * 10, 0.0),
    ("yes.", ["yes"] * 10, 0.0),
    (" yes\n", ["yes"] * 10, 1.0),               # ... but newlines, tabs and the ends are cleaned
    ("The dog", ["The dog"] * 10, 1.0),
    ("dog", ["The dog"] * 10, 0.0),              # no article dropping on either side
    ("t-shirt", ["t-shirt"] * 10, 1.0),
    ("t shirt", ["t-shirt"] * 10, 0.0),
    ("Yes", ["yes"] * 5 + ["yes "] * 5, 0.0),     # answers that differ only in spaces count as agreeing
    ("Yes", ["yes"] * 9 + ["yes\t"], 0.0),
])
def test_unanimous_human_answers_are_compared_verbatim(prediction, answers, expected):
    assert vqa_question_accuracy(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, answers, expected", [
    # the humans differ: both sides fully normalised. "The dog" x9 -> "dog" x9, so any spelling of
    # dog matches 9 (score 1.0) and "cat" matches 1 (0.3)
    ("dog", ["The dog"] * 9 + ["cat"], 1.0),
    ("the dog", ["The dog"] * 9 + ["cat"], 1.0),
    ("A dog.", ["The dog"] * 9 + ["cat"], 1.0),
    ("Cat!", ["The dog"] * 9 + ["cat"], 0.3),
    # number words on the human side too: two, two, 2 -> 2 x3 (0.9); three x7 -> 3 (1.0)
    ("2", ["two"] * 2 + ["2"] + ["three"] * 7, 0.9),
    ("two", ["two"] * 2 + ["2"] + ["three"] * 7, 0.9),
    ("Three", ["two"] * 2 + ["2"] + ["three"] * 7, 1.0),
    # punctuation on both sides: t-shirt x3 -> "t shirt" (0.9)
    ("t shirt", ["t-shirt"] * 3 + ["shirt"] * 7, 0.9),
    ("T-Shirt", ["t-shirt"] * 3 + ["shirt"] * 7, 0.9),
    ("dont know", ["don't know"] * 2 + ["no"] * 8, 0.6),
])
def test_differing_human_answers_normalise_both_sides(prediction, answers, expected):
    assert vqa_question_accuracy(prediction, answers) == pytest.approx(expected)


def _gt(answers, answer_type, question_type):
    return {"answers": answers, "answer_type": answer_type, "question_type": question_type}


def test_vqa_accuracy_breakdowns():
    ground_truth = {
        1: _gt(["red"] * 10, "other", "what color"),                 # "red" -> 1.0
        2: _gt(["yes"] * 1 + ["no"] * 9, "yes/no", "is the"),         # "Yes." -> "yes" -> 0.3
        3: _gt(["blue"] * 2 + ["green"] * 8, "other", "what color"),  # "Blue" -> "blue" -> 0.6
        4: _gt(["yes"] * 10, "yes/no", "is the"),                    # "Yes" -> 0.0 (unanimous)
    }
    scores = vqa_accuracy({1: "red", 2: "Yes.", 3: "Blue", 4: "Yes"}, ground_truth)
    assert scores["num_questions"] == 4
    assert scores["per_question"] == pytest.approx({1: 1.0, 2: 0.3, 3: 0.6, 4: 0.0})
    assert scores["overall"] == pytest.approx(1.9 / 4)
    assert scores["per_answer_type"] == pytest.approx({"other": 0.8, "yes/no": 0.15})
    assert scores["per_question_type"] == pytest.approx({"what color": 0.8, "is the": 0.15})
    assert scores["percent"] == {
        "overall": 47.5,
        "per_answer_type": {"other": 80.0, "yes/no": 15.0},
        "per_question_type": {"what color": 80.0, "is the": 15.0},
    }


def test_vqa_accuracy_rejects_mismatched_ids():
    ground_truth = {q: _gt(["yes"] * 10, "yes/no", "is") for q in (1, 2, 3)}
    with pytest.raises(ValueError, match=r"2 question ids missing .*\(e\.g\. 2, 3\).*1 question ids .*\(e\.g\. 9\)"):
        vqa_accuracy({1: "yes", 9: "no"}, ground_truth)


def test_scoring_does_not_import_paddle():
    # The scorer must run where Paddle is not installed (a leaderboard box, a laptop).
    code = "import sys, visualbert.metrics, visualbert.evaluate; assert 'paddle' not in sys.modules, 'paddle imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---- VQA loaders ----------------------------------------------------------------------------

def _annotation(qid, answers, answer_type="other", question_type="what"):
    return {
        "question_id": qid, "image_id": 7, "question_type": question_type, "answer_type": answer_type,
        "multiple_choice_answer": answers[0],
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }


def test_load_official_annotations_and_questions(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": [_annotation(5, ["cat"] * 10), _annotation(6, ["2"] * 10, "number", "how many")]}))
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"questions": [
        {"question_id": 5, "image_id": 7, "question": "What animal?"},
        {"question_id": 6, "image_id": 7, "question": "How many?"}]}))
    gt = read_vqa_ground_truth(ann, questions)
    assert list(gt) == [5, 6]
    assert gt[6] == {"answers": ["2"] * 10, "answer_type": "number", "question_type": "how many",
                     "question": "How many?"}

    questions.write_text(json.dumps({"questions": [{"question_id": 5, "image_id": 7, "question": "What animal?"}]}))
    with pytest.raises(ValueError, match=r"q\.json does not match .*1 question ids missing .*\(e\.g\. 6\)"):
        read_vqa_ground_truth(ann, questions)
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        read_vqa_ground_truth(tmp_path / "nope.json")


def test_load_imdb_ground_truth(tmp_path):
    imdb = np.array([
        {"create_time": "x", "dataset_name": "vqa", "version": 1, "has_answer": True},
        {"question_id": np.int64(11), "image_id": 3, "question_str": "what?", "answers": ["cat"] * 10},
        {"question_id": 12, "image_id": 3, "question_str": "how many?", "valid_answers": ["2"] * 10},
    ], dtype=object)
    path = tmp_path / "imdb_val.npy"
    np.save(path, imdb, allow_pickle=True)  # writing our own test file; reading goes through safeload
    gt = read_vqa_ground_truth(path)
    assert gt == {
        11: {"answers": ["cat"] * 10, "answer_type": None, "question_type": None, "question": "what?"},
        12: {"answers": ["2"] * 10, "answer_type": None, "question_type": None, "question": "how many?"},
    }
    scores = vqa_accuracy({11: "cat", 12: "2"}, gt)
    assert scores["overall"] == 1.0 and scores["per_answer_type"] == {} and scores["per_question_type"] == {}


def test_load_imdb_without_answers_is_an_error(tmp_path):
    path = tmp_path / "imdb_test.npy"
    np.save(path, np.array([{"version": 1}, {"question_id": 1, "question_str": "?"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"imdb_test.npy: item 1 \(question_id 1\) has neither 'answers' nor 'valid_answers'"):
        read_vqa_ground_truth(path)


def test_read_vqa_result(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps([{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "2"}]))
    assert read_vqa_result(path) == {1: "yes", 2: "2"}
    path.write_text(json.dumps([{"question_id": 1, "answer": "yes"}, {"question_id": 1, "answer": "no"}]))
    with pytest.raises(ValueError, match="result 1: question 1 is answered twice"):
        read_vqa_result(path)
    path.write_text(json.dumps([{"question_id": "1", "answer": "yes"}]))
    with pytest.raises(ValueError, match="question_id must be an integer"):
        read_vqa_result(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="result.json: not valid JSON"):
        read_vqa_result(path)


# ---- NLVR2 ----------------------------------------------------------------------------------

def test_nlvr2_hand_case():
    labels = {"dev-1-0-0": True, "dev-1-1-0": False, "dev-2-0-1": True}
    # one of sentence dev-1--0's two pairs is wrong: 2/3 right, 1 of 2 sentences consistent
    scores = nlvr2_scores({"dev-1-0-0": True, "dev-1-1-0": True, "dev-2-0-1": True}, labels)
    assert scores == {"accuracy": pytest.approx(2 / 3), "consistency": 0.5, "num_examples": 3, "num_sentences": 2}
    assert nlvr2_sentence_key("dev-850-2-0") == "dev-850--0"


def test_nlvr2_missing_and_extra_predictions_are_errors():
    labels = {"dev-1-0-0": True, "dev-1-1-0": False}
    with pytest.raises(ValueError, match=r"1 identifiers missing from the predictions \(e\.g\. dev-1-1-0\)"):
        nlvr2_scores({"dev-1-0-0": True}, labels)
    with pytest.raises(ValueError, match=r"1 identifiers in the predictions are not in the labels \(e\.g\. dev-9-0-0\)"):
        nlvr2_scores({**labels, "dev-9-0-0": True}, labels)


def _dev_groups():
    """Examples of the real dev split grouped by sentence, derived independently of the code."""
    groups = defaultdict(list)
    with open(NLVR2_DEV) as f:
        for line in f:
            identifier = json.loads(line)["identifier"]
            split, set_id, _pair, sentence = re.fullmatch(r"(\w+)-(\d+)-(\d+)-(\d+)", identifier).groups()
            groups[(split, set_id, sentence)].append(identifier)
    return groups


def test_nlvr2_on_real_dev_split():
    labels = read_nlvr2_labels(NLVR2_DEV)
    groups = _dev_groups()
    n, s = len(labels), len(groups)
    assert n == 6982
    assert nlvr2_scores(dict(labels), labels) == {"accuracy": 1.0, "consistency": 1.0, "num_examples": n, "num_sentences": s}

    two_pair_group = next(g for g in groups.values() if len(g) >= 2)
    other_group = next(g for g in groups.values() if g is not two_pair_group)

    flipped = dict(labels)
    flipped[two_pair_group[0]] = not flipped[two_pair_group[0]]
    assert nlvr2_scores(flipped, labels)["accuracy"] == pytest.approx((n - 1) / n)
    assert nlvr2_scores(flipped, labels)["consistency"] == pytest.approx((s - 1) / s)

    # a second wrong pair in the same sentence costs accuracy but no more consistency
    flipped[two_pair_group[1]] = not flipped[two_pair_group[1]]
    assert nlvr2_scores(flipped, labels)["accuracy"] == pytest.approx((n - 2) / n)
    assert nlvr2_scores(flipped, labels)["consistency"] == pytest.approx((s - 1) / s)

    flipped[other_group[0]] = not flipped[other_group[0]]
    assert nlvr2_scores(flipped, labels)["consistency"] == pytest.approx((s - 2) / s)


def test_read_nlvr2_predictions(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("dev-1-0-0,True\ndev-1-1-0,false\n\n")
    assert read_nlvr2_predictions(path) == {"dev-1-0-0": True, "dev-1-1-0": False}
    path.write_text("dev-1-0-0,True\ndev-1-1-0,maybe\n")
    with pytest.raises(ValueError, match=r"p\.csv:2: prediction 'maybe' of dev-1-1-0 is not \"True\" or \"False\""):
        read_nlvr2_predictions(path)
    path.write_text("dev-1-0-0,True\ndev-1-0-0,False\n")
    with pytest.raises(ValueError, match=r"p\.csv:2: identifier dev-1-0-0 is predicted twice"):
        read_nlvr2_predictions(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: no such file"):
        read_nlvr2_predictions(tmp_path / "missing.csv")
