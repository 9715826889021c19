"""VQA data in the official JSON format: reader, answer vocabulary, and the own-data commands end to end."""
import json
import os

import numpy as np
import pytest
from conftest import run_script
from helpers import question_files, write_json

from visualbert import VQA_ANSWERS_FILE
from visualbert import examples as D
from visualbert.formats.vqa import read_answer_vocab, write_answer_vocab
from visualbert.own_demo import IMAGE_KEY, write_shapes

FAST = ["--device", "cpu", "--num_workers", "0", "--seed", "1"]


def test_reader_maps_image_ids_to_store_keys_and_keeps_all_answers(tmp_path):
    q, a = question_files(tmp_path)
    examples = D.read_vqa_json(q, a, image_key="COCO_val2014_{image_id:012d}", split="minival")
    assert [ex["question_id"] for ex in examples] == [1, 2, 3]
    assert examples[0]["image_key"] == "COCO_val2014_000000000007"
    assert examples[2]["answers"] == ["a dog"] * 10
    assert examples[1]["question_str"] == "how many?" and examples[1]["split"] == "minival"
    assert examples[0]["answer_type"] == "other"
    unlabelled = D.read_vqa_json(q, image_key="{image_id}")
    assert unlabelled[2]["image_key"] == "12" and unlabelled[2]["answers"] is None


@pytest.mark.parametrize("change, match", [
    (lambda qs, anns: anns.pop(), r"q.json does not match .*a.json: 1 question ids in the questions file are not in "
                                   r"the annotations \(e\.g\. 3\)"),
    (lambda qs, anns: qs[1].update(image_id=7.5), "question 1 \\(question_id 2\\): image_id must be an integer or a non-empty string"),
    (lambda qs, anns: qs[1].update(question_id="2"), "question 1 \\(question_id 2\\): question_id must be an integer"),
    (lambda qs, anns: qs[2].update(question_id=1), "question_id 1 appears twice"),
    (lambda qs, anns: qs[0].pop("question"), "q.json: questions entry 0 has no 'question'"),
    (lambda qs, anns: anns[1].update(answers=[]), "annotation 1 \\(question_id 2\\): \"answers\" must be a non-empty list"),
    (lambda qs, anns: anns[2].update(image_id=8), "question_id 3 has image_id 8"),
    (lambda qs, anns: anns.append(dict(anns[0])), "annotation 3 \\(question_id 1\\): question_id 1 is annotated twice"),
])
def test_reader_names_the_file_and_question_of_bad_input(tmp_path, change, match):
    q, a = question_files(tmp_path)
    qs, anns = json.load(open(q))["questions"], json.load(open(a))["annotations"]
    change(qs, anns)
    write_json(tmp_path / "q.json", {"questions": qs})
    write_json(tmp_path / "a.json", {"annotations": anns})
    with pytest.raises(ValueError, match=match):
        D.read_vqa_json(q, a)


def test_reader_rejects_other_formats_and_bad_templates(tmp_path):
    q, a = question_files(tmp_path)
    with pytest.raises(ValueError, match="expected the official VQA questions format"):
        D.read_vqa_json(a, None)
    with pytest.raises(ValueError, match=r"--image_key 'img_\{id\}': cannot format image_id 7"):
        D.read_vqa_json(q, a, image_key="img_{id}")
    with pytest.raises(FileNotFoundError, match=r"nope.json: no such file \(expected the official VQA questions format"):
        D.read_vqa_json(str(tmp_path / "nope.json"))


def test_answer_vocab_counts_normalised_answers_most_frequent_first(tmp_path):
    q, a = question_files(tmp_path)
    examples = D.read_vqa_json(q, a)
    # normalised: "Yes" -> yes (7), "two" -> 2 (6 + 4 = 10), "a dog" -> dog (10), no (3)
    assert D.build_answer_vocab(examples) == ["<unk>", "2", "dog", "yes", "no"]
    assert D.build_answer_vocab(examples, top_k=2) == ["<unk>", "2", "dog"]
    path = tmp_path / "vocab.txt"
    write_answer_vocab(str(path), D.build_answer_vocab(examples))
    assert read_answer_vocab(str(path)) == ["<unk>", "2", "dog", "yes", "no"]
    with pytest.raises(ValueError, match="no answers"):
        D.build_answer_vocab(D.read_vqa_json(q))


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, tiny_config):
    """The README's own-data commands on drawn images: extract -> train (JSON, built vocab) on a few steps."""
    root = tmp_path_factory.mktemp("own")
    files = write_shapes(str(root), seed=3)
    feats = str(root / "feats")
    run_script(["-m", "visualbert.extract", "--image_dir", files["images"], "--output_dir", feats, "--backbone", "patches",
                "--image_size", "32", "--patch_size", "8", "--num_workers", "0"])
    run = str(root / "run")
    proc = run_script(["VQA2/run_vqa2.py", "--train_questions", files["train_questions"], "--train_annotations",
                       files["train_annotations"], "--eval_questions", files["val_questions"], "--eval_annotations",
                       files["val_annotations"], "--features", feats, "--image_key", IMAGE_KEY, "--answer_vocab",
                       "build:6", "--model_name_or_path", tiny_config(0.0), "--output_dir", run, "--batch_size", "32",
                       "--learning_rate", "2e-3", "--max_steps", "12", "--eval_steps", "12", *FAST])
    return root, files, feats, run, proc


@pytest.mark.slow
def test_training_on_json_files_builds_and_saves_the_answer_vocab(own_run):
    root, files, feats, run, proc = own_run
    vocab = read_answer_vocab(os.path.join(run, "answer_vocab.txt"))
    assert vocab[0] == "<unk>" and len(vocab) == 7
    assert set(vocab[1:]) <= {"yes", "no", "circle", "square", "triangle", "red", "green", "blue", "yellow"}
    assert {"yes", "no"} <= set(vocab)  # half the questions are yes/no: the most frequent answers
    with open(os.path.join(run, "best", "eval_results.json")) as f:
        assert 0.0 <= json.load(f)["vqa_accuracy"] <= 1.0
    with open(os.path.join(run, "best", "config.json")) as f:
        assert len(json.load(f)["id2label"]) == 7  # the head is sized by the built vocabulary


@pytest.mark.slow
def test_prediction_reuses_the_run_vocab_and_evaluate_scores_it(own_run):
    root, files, feats, run, _ = own_run
    result = str(root / "result.json")
    proc = run_script(["VQA2/run_predict.py", "--questions", files["val_questions"], "--features", feats,
                       "--image_key", IMAGE_KEY, "--model_name_or_path", os.path.join(run, "best"), "--output", result,
                       *FAST])
    rows = json.load(open(result))
    qids = [q["question_id"] for q in json.load(open(files["val_questions"]))["questions"]]
    assert sorted(r["question_id"] for r in rows) == sorted(qids)
    vocab = read_answer_vocab(os.path.join(run, "answer_vocab.txt"))
    assert {r["answer"] for r in rows} <= set(vocab[1:])
    assert "vqa_accuracy" not in proc.stdout  # no --annotations: nothing to score against
    scored = run_script(["-m", "visualbert.evaluate", "vqa", "--result", result, "--annotations", files["val_annotations"],
                         "--questions", files["val_questions"]])
    scores = json.loads(scored.stdout)
    assert scores["num_questions"] == len(qids)
    assert set(scores["percent"]["per_answer_type"]) == {"other", "yes/no"}

    # with --annotations run_predict prints the same accuracy the evaluator computes
    proc = run_script(["VQA2/run_predict.py", "--questions", files["val_questions"], "--annotations",
                       files["val_annotations"], "--features", feats, "--image_key", IMAGE_KEY,
                       "--model_name_or_path", run, "--output", result, *FAST])
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert np.isclose(printed["vqa_accuracy"], scores["fraction"]["overall"])


@pytest.mark.slow
def test_wrong_vocab_or_missing_features_are_one_line_errors(own_run, tmp_path):
    root, files, feats, run, _ = own_run
    proc = run_script(["VQA2/run_predict.py", "--questions", files["val_questions"], "--features", feats,
                       "--image_key", IMAGE_KEY, "--model_name_or_path", os.path.join(run, "best"), "--answer_vocab",
                       VQA_ANSWERS_FILE,
                       "--output", str(tmp_path / "r.json"), *FAST], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "predicts 7 answers, but the answer vocabulary has 3129" in proc.stderr
    proc = run_script(["VQA2/run_predict.py", "--questions", files["val_questions"], "--features", feats,
                       "--image_key", "other_{image_id}", "--model_name_or_path", run,
                       "--output", str(tmp_path / "r.json"), *FAST], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{feats}: no region features for image other_50001 (needed by vqa2" in proc.stderr
    assert not os.path.exists(tmp_path / "r.json")


@pytest.mark.slow
def test_eval_questions_are_removed_from_training(own_run, tiny_config, tmp_path):
    root, files, feats, run, _ = own_run
    proc = run_script(["VQA2/run_vqa2.py", "--train_questions", files["val_questions"], "--train_annotations",
                       files["val_annotations"], "--eval_questions", files["val_questions"], "--eval_annotations",
                       files["val_annotations"], "--features", feats, "--image_key", IMAGE_KEY,
                       "--model_name_or_path", tiny_config(0.0), "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
                       *FAST], check=False)
    assert proc.returncode != 0
    assert "no questions left after removing those of" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_refused_resume_leaves_the_runs_answer_vocab_alone(own_run, tiny_config):
    # the vocabulary is written only once the run owns its directory: a resume refused for its changed
    # settings must not replace the vocabulary that the run's checkpoints were trained with
    root, files, feats, run, _ = own_run
    before = read_answer_vocab(os.path.join(run, "answer_vocab.txt"))
    proc = run_script(["VQA2/run_vqa2.py", "--train_questions", files["train_questions"], "--train_annotations",
                       files["train_annotations"], "--features", feats, "--image_key", IMAGE_KEY, "--answer_vocab",
                       "build:4", "--model_name_or_path", tiny_config(0.0), "--output_dir", run, "--resume", "latest",
                       "--batch_size", "32", "--max_steps", "12", *FAST], check=False)
    assert proc.returncode != 0 and "answer_vocab \"build:6\" -> \"build:4\"" in proc.stderr, proc.stderr
    assert read_answer_vocab(os.path.join(run, "answer_vocab.txt")) == before
