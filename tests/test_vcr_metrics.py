"""VCR scores and the leaderboard CSV, worked by hand."""
import json
import os
import subprocess
import sys

import pytest

from visualbert import metrics, vcr_tasks
from visualbert.formats import vcr as vcr_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def item(annot_id, answer_label, rationale_label):
    return {"annot_id": annot_id, "objects": ["person"], "img_fn": "m/a.jpg", "metadata_fn": "m/a.json",
            "question": ["why", "?"], "answer_choices": [["a"]] * 4, "rationale_choices": [["r"]] * 4,
            "answer_label": answer_label, "rationale_label": rationale_label}


def uniform_rows(best_rationale):
    rows = [[0.1] * 4 for _ in range(4)]
    for i, j in enumerate(best_rationale):
        rows[i][j] = 0.7
    return rows


# q0: answer right (1), rationale given answer 1 right (2)          -> Q->A, QA->R, Q->AR
# q1: answer wrong (picks 0, label 3), rationale given answer 3 right -> QA->R only
# q2: answer right (2), rationale given answer 2 wrong              -> Q->A only
# q3: everything wrong                                              -> none
PREDICTIONS = {
    "val-0": {"answer": [0.1, 0.6, 0.2, 0.1], "rationale": uniform_rows([0, 2, 0, 0])},
    "val-1": {"answer": [0.5, 0.2, 0.2, 0.1], "rationale": uniform_rows([0, 0, 0, 1])},
    "val-2": {"answer": [0.1, 0.2, 0.6, 0.1], "rationale": uniform_rows([3, 3, 0, 3])},
    "val-3": {"answer": [0.7, 0.1, 0.1, 0.1], "rationale": uniform_rows([1, 1, 1, 1])},
}
LABELS = {"val-0": (1, 2), "val-1": (3, 1), "val-2": (2, 3), "val-3": (1, 0)}


def test_q_a_qa_r_and_q_ar_by_hand():
    scores = metrics.vcr_scores(PREDICTIONS, LABELS)
    assert scores == {"q_a": 0.5, "qa_r": 0.5, "q_ar": 0.25, "num_questions": 4}


def test_the_csv_has_the_leaderboard_layout_and_reads_back(tmp_path):
    path = tmp_path / "sub.csv"
    vcr_tasks.write_vcr_csv(path, PREDICTIONS)
    lines = path.read_text().splitlines()
    assert lines[0] == ("annot_id,answer_0,answer_1,answer_2,answer_3," + ",".join(
        f"rationale_conditioned_on_a{i}_{j}" for i in range(4) for j in range(4)))
    assert lines[1].startswith("val-0,0.1,0.6,0.2,0.1,0.7,0.1,0.1,0.1,0.1,0.1,0.7,0.1,")
    assert len(lines) == 5 and all(len(line.split(",")) == 21 for line in lines)
    assert vcr_format.read_vcr_predictions(path) == PREDICTIONS


def evaluate(*args):
    return subprocess.run([sys.executable, "-m", "visualbert.evaluate", "vcr", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_evaluate_vcr_command_line(tmp_path):
    labels = tmp_path / "val.jsonl"
    labels.write_text("".join(json.dumps(item(k, *v)) + "\n" for k, v in LABELS.items()))
    predictions = tmp_path / "sub.csv"
    vcr_tasks.write_vcr_csv(predictions, PREDICTIONS)
    proc = evaluate("--predictions", predictions, "--labels", labels)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"q_a": 0.5, "qa_r": 0.5, "q_ar": 0.25, "num_questions": 4}

    vcr_tasks.write_vcr_csv(predictions, {k: v for k, v in PREDICTIONS.items() if k != "val-3"})
    proc = evaluate("--predictions", predictions, "--labels", labels)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "val-3" in proc.stderr

    predictions.write_text(predictions.read_text().replace("0.6", "x", 1))
    proc = evaluate("--predictions", predictions, "--labels", labels)
    assert proc.returncode == 1 and "sub.csv:2: the probabilities must be numbers" in proc.stderr


@pytest.mark.parametrize("text, message", [
    ("annot_id,answer_0\n", r"sub.csv:1: expected the header"),
    (",".join(vcr_format.VCR_CSV_COLUMNS) + "\nval-0,1,2\n", r"sub.csv:2: 3 fields, expected 21"),
])
def test_malformed_csv_is_one_line_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "sub.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        vcr_format.read_vcr_predictions(path)
