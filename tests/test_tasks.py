"""visualbert.tasks on its own: which head and dataset each task gets, the checks made before any work,
and the leaderboard files it writes."""
import argparse
import csv
import json

import numpy as np
import paddle
import pytest
from helpers import make, numpy_batch, tensors

from visualbert import inputs, tasks
from visualbert import modeling as vm
from visualbert.features import open_features

FEATURES = {"vqa2": ("coco_detectron_fix_100", "X_COCO"), "nlvr2": ("nlvr2_detectron_fix_144", "X_NLVR"),
            "coco_captions": ("coco_detectron_fix_100", "X_COCO")}


def task_args(demo_dir, name, **kw):
    kind, root = FEATURES[name]
    return argparse.Namespace(**dict(dict(input_dir=str(demo_dir / root), annotation_dir=None, max_seq_length=32,
                                          feature_dtype="float32", answer_vocab=None, dataset=name, mask_prob=0.15,
                                          seed=0, no_nlvr2_label=False, train_split="train"), **kw))


def features_of(demo_dir, name):
    kind, root = FEATURES[name]
    return open_features(kind, str(demo_dir / root))


def test_each_task_gets_its_head():
    assert tasks.HEAD == {"vqa2": vm.VisualBertForQuestionAnswering, "nlvr2": vm.VisualBertForVisualReasoning}


@pytest.mark.parametrize("name,split,dataset_class", [("vqa2", "val", inputs.VQADataset),
                                                      ("nlvr2", "dev", inputs.NLVR2Dataset)])
def test_build_gives_each_task_its_dataset(demo_dir, name, split, dataset_class):
    args = task_args(demo_dir, name)
    ds = tasks.build(name, split, args, inputs.get_tokenizer(), features_of(demo_dir, name), labels_for="--eval_split")
    assert type(ds) is dataset_class and len(ds) > 0


@pytest.mark.parametrize("corpus,matching,dataset_class", [
    ("coco_captions", True, inputs.CaptionPretrainDataset), ("vqa2", False, inputs.VQAPretrainDataset),
    ("nlvr2", True, inputs.NLVR2PretrainDataset)])
def test_pretraining_gets_the_corpus_dataset_and_matching_head_use(demo_dir, corpus, matching, dataset_class):
    args = task_args(demo_dir, corpus)
    split = {"coco_captions": "val", "vqa2": "val", "nlvr2": "dev"}[corpus]
    ds = tasks.pretrain_dataset(args, split, inputs.get_tokenizer(), features_of(demo_dir, corpus), seed=0)
    assert type(ds) is dataset_class and tasks.uses_matching(args) is matching
    assert tasks.uses_matching(task_args(demo_dir, "nlvr2", no_nlvr2_label=True)) is False


def test_an_unlabelled_split_is_refused_for_training_and_scoring(demo_dir):
    with pytest.raises(ValueError, match=r"^--eval_split test: the vqa2 test split has no answers .*scored"):
        tasks.build("vqa2", "test", task_args(demo_dir, "vqa2"), inputs.get_tokenizer(), features_of(demo_dir, "vqa2"),
                    labels_for="--eval_split")
    with pytest.raises(ValueError, match=r"^--train_split test1: the nlvr2 test1 split has no labels .*trained"):
        tasks.check_labelled([{"label": None}], "nlvr2", "test1", "--train_split")


def test_a_missing_image_is_named_before_any_work(demo_dir):
    from visualbert.examples import load_dataset

    example = dict(next(iter(load_dataset("nlvr2", "dev", input_dir=str(demo_dir / "X_NLVR")))))
    example["image_keys"] = [example["image_keys"][0], "dev-9999-0-img1.png"]
    with pytest.raises(FileNotFoundError, match=r"no region features for image dev-9999-0-img1\.png \(needed by nlvr2 dev "
                                                r"identifier .*; the key was made with --image_map"):
        tasks.check_features_exist([example], features_of(demo_dir, "nlvr2"), "nlvr2", "dev", key_origin="--image_map")


def test_vqa_prediction_never_answers_the_unknown_token():
    model = make(vm.VisualBertForQuestionAnswering, num_labels=3)
    with paddle.no_grad():
        model.cls.bias.set_value(paddle.to_tensor(np.array([100.0, 0.0, 1.0], np.float32)))  # <unk> would win
    batch = dict(tensors(numpy_batch()), question_id=paddle.to_tensor(np.array([5, 9])))
    rows = tasks._vqa_step(["<unk>", "no", "yes"])(model, batch)
    assert [q for q, _ in rows] == [5, 9] and all(answer != "<unk>" for _, answer in rows)


def test_leaderboard_files(tmp_path):
    tasks.write_vqa_result(str(tmp_path / "result.json"), {12: "yes", 3: "2"})
    assert json.loads((tmp_path / "result.json").read_text()) == [{"question_id": 3, "answer": "2"},
                                                                  {"question_id": 12, "answer": "yes"}]
    tasks.write_nlvr2_csv(str(tmp_path / "predictions.csv"), {"test1-0-0-0": True, "test1-0-1-0": False})
    assert (tmp_path / "predictions.csv").read_text() == "test1-0-0-0,True\ntest1-0-1-0,False\n"
    assert list(csv.reader(open(tmp_path / "predictions.csv"))) == [["test1-0-0-0", "True"], ["test1-0-1-0", "False"]]
