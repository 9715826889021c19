"""Mistakes a user makes on the command line end in one line that names the fix, not a traceback."""
import json
import shutil

import numpy as np
import pytest

from visualbert import cli, tasks
from visualbert import datasets as D
from visualbert.features import open_features
from visualbert.processing import ExampleError, VQADataset, get_tokenizer


def one_line_exit(excinfo):
    message = str(excinfo.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_training_on_an_unlabelled_split_is_refused(demo_dir, tiny_config, tmp_path):
    args = cli.parse_finetune_args("vqa2", "", ["--input_dir", str(demo_dir / "X_COCO"), "--train_split", "test",
                                                "--eval_split", "none", "--model_name_or_path", tiny_config(),
                                                "--output_dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as e:
        tasks.load_for_finetuning("vqa2", args)
    assert one_line_exit(e).startswith("error: --train_split test: the vqa2 test split has no answers")
    args = cli.parse_finetune_args("vqa2", "", ["--input_dir", str(demo_dir / "X_COCO"), "--eval_split", "test",
                                                "--model_name_or_path", tiny_config(), "--output_dir", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as e:
        tasks.load_for_finetuning("vqa2", args)
    assert "--eval_split test: the vqa2 test split has no answers" in one_line_exit(e)


def test_a_sequence_longer_than_the_position_table_is_refused(demo_dir, tiny_config, tmp_path):
    args = cli.parse_finetune_args("nlvr2", "", ["--input_dir", str(demo_dir / "X_NLVR"), "--max_seq_length", "600",
                                                 "--model_name_or_path", tiny_config(), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        tasks.load_for_finetuning("nlvr2", args)
    assert one_line_exit(e) == (f"error: --max_seq_length 600: {tiny_config()} has positions for at most 512 tokens "
                                "(max_position_embeddings); pass --max_seq_length 512 or less")


@pytest.mark.parametrize("payload", [[{"image_id": 1, "caption": "a dog"}], "captions"])
def test_a_coco_captions_file_of_another_shape_is_one_line(tmp_path, payload):
    path = tmp_path / "captions_train2014.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"captions_train2014.json: not a COCO caption file \(expected a JSON object"):
        D.read_coco_captions(str(path), "train")


def test_a_feature_file_of_another_dimension_names_itself_the_file_that_set_the_dimension_and_the_example(demo_dir, tmp_path):
    root = tmp_path / "X_COCO"
    shutil.copytree(demo_dir / "X_COCO", root)
    features = open_features("coco_detectron_fix_100", str(root))
    first = next(iter(features.iter_files()))
    np.save(first[1], np.ones((3, 7), np.float32))  # the file the dimension is read from is the odd one
    examples = [ex for ex in D.load_dataset("vqa2", "train", input_dir=str(root)) if ex["image_key"] != first[0]]
    assert features.dim == 7
    dataset = VQADataset(examples[:1], get_tokenizer(), features)
    with pytest.raises(ExampleError) as e:
        dataset[0]
    message = str(e.value)
    assert "\n" not in message
    assert f"{features.path(examples[0]['image_key'])}: feature dim 2048, but {first[1]} has 7" in message
    assert message.endswith(f"(needed by train question_id {examples[0]['question_id']})")
