"""Mistakes a user makes on the command line end in one line that names the fix, not a traceback."""
import json
import os
import shutil

import numpy as np
import pytest

from visualbert import cli, tasks
from visualbert import examples as D
from visualbert.features import open_features
from visualbert.inputs import ExampleError, VQADataset, get_tokenizer


def one_line_exit(excinfo):
    message = str(excinfo.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_training_on_an_unlabelled_split_is_refused(demo_dir, tiny_config, tmp_path):
    args, _ = cli.parse_finetune_args("vqa2", "", ["--input_dir", str(demo_dir / "X_COCO"), "--train_split", "test",
                                                "--eval_split", "none", "--model_name_or_path", tiny_config(),
                                                "--output_dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as e:
        tasks.load_for_finetuning("vqa2", args)
    assert one_line_exit(e).startswith("error: --train_split test: the vqa2 test split has no answers")
    args, _ = cli.parse_finetune_args("vqa2", "", ["--input_dir", str(demo_dir / "X_COCO"), "--eval_split", "test",
                                                "--model_name_or_path", tiny_config(), "--output_dir", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as e:
        tasks.load_for_finetuning("vqa2", args)
    assert "--eval_split test: the vqa2 test split has no answers" in one_line_exit(e)


def test_a_sequence_longer_than_the_position_table_is_refused(demo_dir, tiny_config, tmp_path):
    args, _ = cli.parse_finetune_args("nlvr2", "", ["--input_dir", str(demo_dir / "X_NLVR"), "--max_seq_length", "600",
                                                 "--model_name_or_path", tiny_config(), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        tasks.load_for_finetuning("nlvr2", args)
    assert one_line_exit(e) == (f"error: --max_seq_length 600: {tiny_config()} has positions for at most 512 tokens "
                                "(max_position_embeddings); pass --max_seq_length 512 or less")


@pytest.mark.parametrize("payload", [[{"image_id": 1, "caption": "a dog"}], "captions", {"annotations": "a dog"}])
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


def test_own_images_refuses_a_folder_that_holds_files(tmp_path, capsys):
    from visualbert.demo import main as demo_main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "grace_hopper.jpg").write_bytes(b"a user's photo")
    assert demo_main(["--own_images", str(photos)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {photos}: not empty; --own_images draws its images") and "\n" not in err
    assert os.listdir(photos) == ["grace_hopper.jpg"]


def test_features_without_a_command_lists_its_commands(capsys):
    from visualbert.features.__main__ import main as features_main

    assert features_main([]) == 2
    out = capsys.readouterr().out
    for command in ("pack", "inspect", "import"):
        assert f"\n    {command} " in out


def test_features_inspect_reads_a_store_named_by_features(tmp_path, capsys):
    from PIL import Image

    from visualbert.extract import extract
    from visualbert.features.__main__ import main as features_main

    os.makedirs(tmp_path / "images")
    for name in ("a", "b"):
        Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "images" / f"{name}.png")
    store = str(tmp_path / "store")
    extract(str(tmp_path / "images"), store, backbone="patches", image_size=16, patch_size=8, num_workers=0,
            progress=False)
    assert features_main(["inspect", "--features", store, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["dims"], report["rows_max"]) == (2, {"192": 2}, 4)
    assert report["made_by"]["backbone"] == "patches"
    with pytest.raises(SystemExit):
        features_main(["inspect", "--features", store, "--input_dir", str(tmp_path)])
    assert "pass either --features DIR, or --image_feature_type with --input_dir" in capsys.readouterr().err


def test_predictions_go_beside_the_run_not_into_the_working_directory(tmp_path):
    run = tmp_path / "run"
    for sub in ("best", "model"):
        os.makedirs(run / sub)
        (run / sub / "config.json").write_text("{}")
    (run / "run_config.json").write_text("{}")
    assert cli.parse_predict_args("vqa2", "", ["--model_name_or_path", str(run / "best")])[1].output == str(run / "result_test.json")
    assert cli.parse_predict_args("vqa2", "", ["--model_name_or_path", str(run), "--questions", "my/val_q.json"]
                                  )[1].output == str(run / "result_val_q.json")
    assert cli.parse_predict_args("nlvr2", "", ["--model_name_or_path", str(run / "model"), "--split", "dev"]
                                  )[1].output == str(run / "predictions_dev.csv")
    converted = tmp_path / "converted"
    os.makedirs(converted)
    (converted / "model_state.pdparams").write_bytes(b"")
    assert cli.parse_predict_args("nlvr2", "", ["--model_name_or_path", str(converted / "model_state.pdparams")]
                                  )[1].output == str(converted / "predictions_test1.csv")
    with pytest.raises(SystemExit):
        cli.parse_predict_args("vqa2", "", ["--model_name_or_path", "visualbert-vqa"])
