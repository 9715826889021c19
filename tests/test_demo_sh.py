"""./demo.sh from a fresh copy of the repository: every stage runs and reaches its bar.

This is the newcomer's first command, so it is tested as they run it: a copy of the tracked files,
nothing else (the venv is shared to avoid a second install; demo.sh would create it otherwise).
"""
import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from visualbert.examples import load_dataset

pytestmark = pytest.mark.slow  # the whole demo, minutes


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    clone = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-c", "--null", "-T", "-", "-f", "-"], cwd=ROOT, input=files, check=True,
                   stdout=open(clone / "src.tar", "wb"))
    subprocess.run(["tar", "-xf", "src.tar"], cwd=clone, check=True)
    os.remove(clone / "src.tar")
    env = dict(os.environ, VISUALBERT_VENV=sys.prefix)
    proc = subprocess.run(["./demo.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return clone, proc


def test_demo_reaches_the_bars(demo_run):
    clone, proc = demo_run
    out = clone / "logs" / "demo"
    vqa = json.loads((out / "vqa" / "eval_minival.json").read_text())
    assert vqa["fraction"]["overall"] >= 0.90, vqa
    nlvr2_dev = json.loads((out / "nlvr2" / "best" / "eval_results.json").read_text())
    assert nlvr2_dev["accuracy"] >= 0.90, nlvr2_dev
    nlvr2_test = json.loads((out / "nlvr2" / "eval_test1.json").read_text())
    assert nlvr2_test["accuracy"] >= 0.90, nlvr2_test
    pretrain = [json.loads(l) for l in open(out / "vqa-coco-pre" / "metrics.jsonl")]
    mlm = [r["masked_lm_loss"] for r in pretrain if "masked_lm_loss" in r]
    assert mlm[-1] < 0.5 * mlm[0], (mlm[0], mlm[-1])  # pretraining learns masked LM ...
    matching = [r["eval_matching_accuracy"] for r in pretrain if "eval_matching_accuracy" in r]
    assert max(matching) >= 0.90, matching  # ... and image-caption matching, from scratch
    assert "=== summary ===" in proc.stdout and "NLVR2 evaluation (test1)" in proc.stdout.split("=== summary ===")[1]
    grounding = json.loads((out / "flickr30k" / "eval_test.json").read_text())["overall"]
    assert grounding["R@1"] >= 60.0, grounding  # chance is 10 (ten detections an image)
    assert "Flickr30K grounding (test)" in proc.stdout.split("=== summary ===")[1]
    assert (out / "flickr30k" / "drawn").is_dir() and len(os.listdir(out / "flickr30k" / "drawn")) == 4
    # the last stage asks the trained VQA model one question and draws where it looked
    answers = (out / "ask" / "answers.txt").read_text().splitlines()
    assert answers[0] == "Q: what is in the picture?" and len(answers) == 5, answers
    assert (out / "ask" / "explain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_vqa_learns_over_the_stage(out / "vqa" / "metrics.jsonl")
    vcr = json.loads((out / "vcr" / "eval_val.json").read_text())
    assert min(vcr["q_a"], vcr["qa_r"], vcr["q_ar"]) >= 0.6, vcr  # chance: 0.25, 0.25, 0.0625
    assert "Q->AR" in proc.stdout.split("=== summary ===")[1]


def test_the_screen_tells_the_story_and_the_logs_keep_the_rest(demo_run):
    """Stage headers with a few lines each and the summary on screen; the launcher's configuration and
    the per-step lines only in the log files whose paths the screen names."""
    clone, proc = demo_run
    lines = proc.stdout.splitlines()
    assert len(lines) < 150, len(lines)
    headers = [line for line in lines if line.startswith("[")]
    stages = [line.split("]", 1)[1].split("  (full log: ")[0].strip() for line in headers]
    assert stages[:3] == ["demo data", "COCO-caption pretraining", "VQA2 fine-tuning"]
    assert stages[-2:] == ["plots", "Ask the VQA model"]
    for header in headers:  # a stage that writes its result to a file (the scores) may log nothing
        assert (clone / header.split("(full log: ")[1].rstrip(")")).is_file(), header
    pretraining_log = (clone / headers[1].split("(full log: ")[1].rstrip(")")).read_text()
    assert pretraining_log.count("train: step") > 20  # every logging step is in the log ...
    assert sum("train: step" in line for line in lines) <= 4 * len(headers)  # ... a few reach the screen
    assert "LAUNCH" not in proc.stdout and "BuildBackendWarning" not in proc.stdout + proc.stderr
    assert lines.count("=== summary ===") == 1


def check_vqa_learns_over_the_stage(metrics):
    """The VQA plot shows learning across the stage, not a task solved in its first steps: the what /
    which-colour questions come within the first epoch, the yes/no ones naming a word much later."""
    evals = [(r["step"], r["eval_vqa_accuracy"]) for r in map(json.loads, open(metrics)) if "eval_vqa_accuracy" in r]
    last = evals[-1][0]
    best = max(accuracy for _, accuracy in evals)
    early = max(accuracy for step, accuracy in evals if step <= 0.15 * last)
    assert evals[0][1] < 0.5 and early + 0.08 <= best, evals
    first_near_best = next(step for step, accuracy in evals if accuracy >= best - 0.02)
    assert first_near_best > last / 3, evals


def test_demo_outputs_are_complete(demo_run):
    clone, _ = demo_run
    out = clone / "logs" / "demo"
    rows = json.loads((out / "vqa" / "result.json").read_text())
    test_ids = {int(ex["question_id"]) for ex in load_dataset("vqa2", "test", input_dir=str(clone / "X_COCO"))}
    assert sorted(r["question_id"] for r in rows) == sorted(test_ids)
    assert all(r["answer"] and r["answer"] != "<unk>" for r in rows)
    with open(out / "nlvr2" / "predictions_test1.csv") as f:
        preds = list(csv.reader(f))
    ids = [ex["identifier"] for ex in load_dataset("nlvr2", "test1", input_dir=str(clone / "X_NLVR"))]
    assert sorted(p[0] for p in preds) == sorted(ids) and {p[1] for p in preds} <= {"True", "False"}
    for run in ("vqa-coco-pre", "vqa", "nlvr2"):
        assert (out / run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the data roots keep their READMEs
    assert (clone / "X_COCO" / "README.md").exists() and (clone / "X_NLVR" / "README.md").exists()
    assert (clone / "X_FLICKR" / "README.md").exists()
