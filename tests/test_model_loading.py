"""--model_name_or_path as the scripts load it (visualbert.pretrained.load_model): what loads, and the one-line
refusals of checkpoints for another task, bad configs and paths that lead nowhere."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_script
from visualbert import pretrained, modeling

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
             visual_embedding_dim=16)


def save(cls, directory, **config):
    """A checkpoint dir of ``cls`` as training writes it: <directory>/model/."""
    model = cls(modeling.VisualBertConfig(**{**SMALL, **config}))
    model.save_pretrained(str(directory / "model"))
    return model


def refusal(call):
    """The SystemExit message of a load that must fail: one line starting with 'error: '."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


@pytest.fixture(scope="module")
def nlvr2_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("nlvr2-run")
    save(modeling.VisualBertForVisualReasoning, run, num_labels=2)
    return run


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrain-run")
    return run, save(modeling.VisualBertForPreTraining, run)


@pytest.mark.parametrize("new_head", [True, False])
def test_checkpoint_for_another_task_names_both_heads(nlvr2_run, new_head):
    message = refusal(lambda: pretrained.load_model(modeling.VisualBertForQuestionAnswering, str(nlvr2_run),
                                             new_head=new_head, num_labels=5))
    assert str(nlvr2_run) in message
    assert "NLVR2 head (VisualBertForVisualReasoning)" in message
    assert "VQA head (VisualBertForQuestionAnswering)" in message


def test_fine_tuning_from_pretraining_starts_a_new_head(pretrain_run):
    run, start = pretrain_run
    model = pretrained.load_model(modeling.VisualBertForQuestionAnswering, str(run), num_labels=5)
    assert model.cls.weight.shape == [32, 5]
    np.testing.assert_array_equal(model.visual_bert.encoder.layer[0].output.dense.weight.numpy(),
                                  start.visual_bert.encoder.layer[0].output.dense.weight.numpy())


def test_prediction_needs_the_trained_head(pretrain_run):
    run, _ = pretrain_run
    message = refusal(lambda: pretrained.load_model(modeling.VisualBertForQuestionAnswering, str(run), new_head=False))
    assert "pre-training heads (VisualBertForPreTraining)" in message and "fine-tuned" in message


def test_same_head_with_other_label_count_is_refused(tmp_path):
    save(modeling.VisualBertForQuestionAnswering, tmp_path, num_labels=3)
    assert pretrained.load_model(modeling.VisualBertForQuestionAnswering, str(tmp_path), num_labels=3).cls.weight.shape == [32, 3]
    message = refusal(lambda: pretrained.load_model(modeling.VisualBertForQuestionAnswering, str(tmp_path), num_labels=7))
    assert "3 outputs" in message and "needs 7" in message


def test_unknown_hidden_act_names_the_file_and_the_choices(tmp_path):
    save(modeling.VisualBertForVisualReasoning, tmp_path)
    config_file = tmp_path / "model" / "config.json"
    config = json.loads(config_file.read_text())
    config["hidden_act"] = "gelu_fast"
    config_file.write_text(json.dumps(config))
    scratch = tmp_path / "scratch.json"
    scratch.write_text(json.dumps({**SMALL, "hidden_act": "gelu_fast"}))
    for path, named in ((tmp_path, config_file), (scratch, scratch)):
        message = refusal(lambda: pretrained.load_model(modeling.VisualBertForVisualReasoning, str(path)))
        assert str(named) in message and "'gelu_fast'" in message
        assert all(name in message for name in ("gelu", "gelu_new", "relu", "tanh"))


def test_malformed_config_json_names_the_file_and_the_position(tmp_path):
    save(modeling.VisualBertForVisualReasoning, tmp_path)
    config_file = tmp_path / "model" / "config.json"
    config_file.write_text('{\n  "hidden_size": 32,\n  "hidden_act": "gelu"\n  "vocab_size": 100\n}\n')
    scratch = tmp_path / "scratch.json"
    shutil.copy(config_file, scratch)
    for path, named in ((tmp_path, config_file), (scratch, scratch)):
        message = refusal(lambda: pretrained.load_model(modeling.VisualBertForVisualReasoning, str(path)))
        assert str(named) in message and "line 4 column 3" in message


def test_paths_that_lead_nowhere_say_how_to_convert_and_download_nothing(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("from_pretrained must not be reached")

    monkeypatch.setattr(modeling.VisualBertForVisualReasoning, "from_pretrained", no_download)
    load = pretrained.load_model
    for missing in (tmp_path / "nowhere", tmp_path / "nowhere" / "model_state.pdparams", "someone/visualbert-vqa"):
        message = refusal(lambda: load(modeling.VisualBertForVisualReasoning, str(missing)))
        assert f"{missing}: no such file or directory" in message and "python -m visualbert.convert" in message
    # an unconverted HuggingFace dir: its PyTorch Linear weights would load untransposed
    hf = os.path.join(os.path.dirname(__file__), "fixtures", "hf", "nlvr2")
    message = refusal(lambda: load(modeling.VisualBertForVisualReasoning, hf))
    assert "HuggingFace (PyTorch) checkpoint" in message and "python -m visualbert.convert" in message
    # a config without weights
    save(modeling.VisualBertForVisualReasoning, tmp_path)
    os.remove(tmp_path / "model" / "model_state.pdparams")
    message = refusal(lambda: load(modeling.VisualBertForVisualReasoning, str(tmp_path)))
    assert "no weights (model_state.pdparams)" in message


@pytest.mark.slow
def test_vqa_predict_given_an_nlvr2_run_fails_with_one_line(demo_dir, tmp_path):
    save(modeling.VisualBertForVisualReasoning, tmp_path, num_labels=2)
    result = tmp_path / "result.json"
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"), "--model_name_or_path",
                       str(tmp_path), "--split", "val", "--output", str(result), "--device", "cpu"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "NLVR2 head" in last and "VisualBertForQuestionAnswering" in last
    assert not result.exists()
