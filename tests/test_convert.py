"""Conversion proven by parity with transformers, plus the failure paths of visualbert.convert.

The expected outputs were computed by transformers (tests/fixtures/make_hf_fixtures.py); neither
torch nor transformers is imported here.
"""
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import paddle
import pytest
from conftest import Evil
from safetensors.numpy import load_file, save_file

from helpers import EXPECTED, HF, ORIGINAL, RUNNERS, TOL, check, run_nlvr2, run_pretraining, run_region_alignment, run_vqa, tensor
from visualbert import convert as cv
from visualbert import modeling
from visualbert.safeload import UnsafePickleError
from visualbert.torch_format import load_torch_file



@pytest.mark.parametrize("name", list(RUNNERS))
def test_parity_with_transformers_through_converted_dir(name, tmp_path):
    dst = tmp_path / "paddle"
    assert cv.main(["--src", os.path.join(HF, name), "--dst", str(dst)]) == 0
    arch = json.load(open(os.path.join(HF, name, "config.json")))["architectures"][0]
    cls = getattr(modeling, arch)
    model = cls.from_pretrained(str(dst))
    model.eval()
    # Exactly the model's weights were written: nothing missing, nothing extra.
    saved = paddle.load(str(dst / "model_state.pdparams"))
    assert sorted(saved) == sorted(model.state_dict())
    check(RUNNERS[name](model), name)


def test_legacy_original_checkpoint_matches_transformers():
    # pretrain_legacy.th: torch's pre-1.6 format, uclanlp key names, plus detector weights to drop.
    model = cv.convert_original(os.path.join(ORIGINAL, "pretrain_legacy.th"),
                                os.path.join(HF, "pretraining", "config.json"))
    model.eval()
    check(run_pretraining(model), "pretraining")


def test_wrapped_zip_original_checkpoint_matches_transformers():
    # vqa_wrapped.th: zip format, {"model": {"module.bert.bert....": ...}, "epoch": 3}.
    model = cv.convert_original(os.path.join(ORIGINAL, "vqa_wrapped.th"), os.path.join(HF, "vqa", "config.json"))
    model.eval()
    check(run_vqa(model), "vqa")


def test_original_key_mapping():
    mapping = {
        "bert.bert.embeddings.word_embeddings.weight": "visual_bert.embeddings.word_embeddings.weight",
        "bert.bert.embeddings.projection.weight": "visual_bert.embeddings.visual_projection.weight",
        "bert.bert.embeddings.projection.bias": "visual_bert.embeddings.visual_projection.bias",
        "bert.bert.embeddings.token_type_embeddings_visual.weight":
            "visual_bert.embeddings.visual_token_type_embeddings.weight",
        "bert.bert.embeddings.position_embeddings_visual.weight":
            "visual_bert.embeddings.visual_position_embeddings.weight",
        "bert.bert.encoder.layer.3.attention.self.query.weight": "visual_bert.encoder.layer.3.attention.self.query.weight",
        "bert.bert.pooler.dense.bias": "visual_bert.pooler.dense.bias",
        "bert.cls.predictions.transform.dense.weight": "cls.predictions.transform.dense.weight",
        "bert.cls.seq_relationship.weight": "cls.seq_relationship.weight",
        "bert.classifier.weight": "cls.weight",
        # The VCR image encoder keeps the original's names; torchvision BatchNorm buffers get Paddle's.
        "detector.backbone.4.0.conv1.weight": "detector.backbone.4.0.conv1.weight",
        "detector.after_roi_align.0.2.bn3.running_mean": "detector.after_roi_align.0.2.bn3._mean",
        "detector.backbone.1.running_var": "detector.backbone.1._variance",
        "detector.backbone.1.num_batches_tracked": None,
    }
    for old, new in mapping.items():
        assert cv._original_key(old) == new, old


def original_names(weights, classifier="bert.cls."):
    """transformers names -> the uclanlp ones an original .th file uses."""
    original = {}
    for key, value in weights.items():
        key = key.replace("visual_bert.", "bert.bert.").replace("visual_projection", "projection")
        key = key.replace("visual_token_type_embeddings", "token_type_embeddings_visual")
        key = key.replace("visual_position_embeddings", "position_embeddings_visual")
        original[key.replace("cls.", classifier, 1) if key.startswith("cls.") else key] = value
    return original


def test_synthetic_original_state_dict_with_wrappers(tmp_path):
    """A hand-made original-style checkpoint (module. prefix, 'state_dict' wrapper) loads exactly."""
    hf = load_file(os.path.join(HF, "nlvr2", "model.safetensors"))
    original = {"module." + k: v for k, v in original_names(hf, classifier="bert.classifier.").items()}
    original["module.detector.head.weight"] = np.zeros(3, np.float32)
    path = tmp_path / "nlvr2.safetensors"
    save_file(original, str(path))
    model = cv.convert_original(str(path), os.path.join(HF, "nlvr2", "config.json"))
    model.eval()
    check(run_nlvr2(model), "nlvr2")


def tied_omitted(name, tmp_path, config_changes=None, renames=None):
    """A copy of fixture ``name`` as transformers saves tied weights: no cls.predictions.decoder.weight
    (optionally some keys renamed, config fields changed)."""
    src = tmp_path / f"{name}-tied"
    src.mkdir()
    weights = cv.read_weights(cv._hf_weights_file(os.path.join(HF, name)))
    weights = {(renames or {}).get(k, k): v for k, v in weights.items() if k != "cls.predictions.decoder.weight"}
    save_file(weights, str(src / "model.safetensors"))
    config = json.load(open(os.path.join(HF, name, "config.json")))
    config.update(config_changes or {})
    (src / "config.json").write_text(json.dumps(config))
    return src


def assert_decoder_is_word_embeddings(model):
    np.testing.assert_array_equal(model.cls.predictions.decoder.weight.numpy(),
                                  model.visual_bert.embeddings.word_embeddings.weight.numpy().T)


def test_region_alignment_saved_without_its_tied_decoder(tmp_path):
    dst = tmp_path / "paddle"
    assert cv.main(["--src", str(tied_omitted("region_alignment", tmp_path)), "--dst", str(dst)]) == 0
    model = modeling.VisualBertForRegionToPhraseAlignment.from_pretrained(str(dst))
    model.eval()
    assert_decoder_is_word_embeddings(model)
    check(run_region_alignment(model), "region_alignment")


def test_untied_pretraining_head_saved_without_decoder_takes_the_word_embeddings(tmp_path):
    # The fixture's decoder is the embedding table, so an untied model given that table as its
    # decoder must reproduce transformers' MLM logits; the bias comes under its alias name only.
    src = tied_omitted("pretraining", tmp_path, {"tie_word_embeddings": False},
                       renames={"cls.predictions.bias": "cls.predictions.decoder.bias"})
    model = cv.convert_hf(str(src))
    model.eval()
    assert model.cls.predictions.decoder is not None
    assert_decoder_is_word_embeddings(model)
    check(run_pretraining(model), "pretraining")


def test_original_checkpoint_without_tied_decoder(tmp_path):
    """uclanlp-named weights (what an original .th holds once read) with the tied decoder left out."""
    weights = load_file(str(tied_omitted("region_alignment", tmp_path) / "model.safetensors"))
    path = tmp_path / "flickr.safetensors"
    save_file(original_names(weights), str(path))
    model = cv.convert_original(str(path), os.path.join(HF, "region_alignment", "config.json"))
    model.eval()
    assert_decoder_is_word_embeddings(model)
    check(run_region_alignment(model), "region_alignment")
    # the legacy-format file as torch_format reads it, its decoder dropped, into an untied model
    legacy = {k: v for k, v in cv.read_weights(os.path.join(ORIGINAL, "pretrain_legacy.th")).items()
              if k != "bert.cls.predictions.decoder.weight"}
    path = tmp_path / "pretrain.safetensors"
    save_file(legacy, str(path))
    untied = tied_omitted("pretraining", tmp_path, {"tie_word_embeddings": False}) / "config.json"
    model = cv.convert_original(str(path), str(untied))
    model.eval()
    assert_decoder_is_word_embeddings(model)
    check(run_pretraining(model), "pretraining")


def test_released_config_names_choose_head_and_sizes():
    raw = cv._released_or_json("visualbert-vqa")
    assert raw["visual_embedding_dim"] == 2048 and raw["num_labels"] == 3129
    assert cv._head_for(None, raw, "x") == "vqa"
    assert cv._head_for(None, cv._released_or_json("uclanlp/visualbert-nlvr2"), "x") == "nlvr2"
    assert cv._head_for(None, cv._released_or_json("visualbert-vcr"), "x") == "multiple_choice"
    assert cv._head_for(None, cv._released_or_json("visualbert-vcr-coco-pre"), "x") == "pretraining"
    with pytest.raises(ValueError, match="neither a released name"):
        cv._released_or_json("visualbert-nope")


def test_bert_initialisation(tmp_path):
    dst = tmp_path / "vb"
    assert cv.main(["--src", os.path.join(HF, "bert"), "--dst", str(dst), "--visual_embedding_dim", "16"]) == 0
    model = modeling.VisualBertForPreTraining.from_pretrained(str(dst))
    model.eval()
    bert = load_file(os.path.join(HF, "bert", "model.safetensors"))
    emb = model.visual_bert.embeddings
    np.testing.assert_array_equal(emb.word_embeddings.weight.numpy(), bert["bert.embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(model.visual_bert.encoder.layer[1].output.dense.weight.numpy(),
                                  bert["bert.encoder.layer.1.output.dense.weight"].T)
    # special_visual_initialize: the visual tables start as BERT's text tables.
    np.testing.assert_array_equal(emb.visual_position_embeddings.weight.numpy(),
                                  bert["bert.embeddings.position_embeddings.weight"])
    np.testing.assert_array_equal(emb.visual_token_type_embeddings.weight.numpy(),
                                  bert["bert.embeddings.token_type_embeddings.weight"])
    assert emb.visual_projection.weight.shape == [16, 32] and float(emb.visual_projection.weight.std()) > 0
    # On text alone the initialised VisualBERT is that BERT: same MLM and next-sentence logits.
    o = model(input_ids=tensor("input_ids"), attention_mask=tensor("attention_mask"),
              token_type_ids=tensor("token_type_ids"))
    assert np.abs(o.prediction_logits.numpy() - EXPECTED["bert.prediction_logits"]).max() <= TOL
    assert np.abs(o.seq_relationship_logits.numpy() - EXPECTED["bert.seq_relationship_logits"]).max() <= TOL


def test_bert_initialisation_for_a_task_head_leaves_head_fresh():
    model = cv.convert_bert(os.path.join(HF, "bert"), head="vqa", visual_embedding_dim=16)
    assert isinstance(model, modeling.VisualBertForQuestionAnswering)
    with pytest.raises(ValueError, match="--visual_embedding_dim"):
        cv.convert_bert(os.path.join(HF, "bert"))


# --- bad input ------------------------------------------------------------------------------------

def copy_fixture(name, tmp_path):
    src = tmp_path / name
    shutil.copytree(os.path.join(HF, name), src)
    return src


def run_cli_error(args, capsys, dst):
    assert cv.main(args + ["--dst", str(dst)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not os.path.exists(dst)
    assert not [p for p in os.listdir(os.path.dirname(dst)) if ".tmp-" in p]
    return err


def test_unknown_key_is_named(tmp_path, capsys):
    src = copy_fixture("nlvr2", tmp_path)
    weights = load_file(str(src / "model.safetensors"))
    weights["visual_bert.encoder.layer.0.extra.weight"] = np.zeros(2, np.float32)
    save_file(weights, str(src / "model.safetensors"))
    err = run_cli_error(["--src", str(src)], capsys, tmp_path / "out")
    assert "unexpected visual_bert.encoder.layer.0.extra.weight" in err


def test_shape_mismatch_is_named(tmp_path, capsys):
    src = copy_fixture("nlvr2", tmp_path)
    config = json.load(open(src / "config.json"))
    config["visual_embedding_dim"] = 8
    json.dump(config, open(src / "config.json", "w"))
    err = run_cli_error(["--src", str(src)], capsys, tmp_path / "out")
    assert "shape mismatch for visual_bert.embeddings.visual_projection.weight" in err


def test_bad_config_is_named_with_the_problem(tmp_path, capsys):
    src = copy_fixture("nlvr2", tmp_path)
    config = json.load(open(src / "config.json"))
    config["hidden_act"] = "gelu_fast"
    json.dump(config, open(src / "config.json", "w"))
    err = run_cli_error(["--src", str(src)], capsys, tmp_path / "out")
    assert f"{src / 'config.json'}: hidden_act 'gelu_fast'" in err and "gelu_new, relu" in err
    (src / "config.json").write_text('{"model_type": "visual_bert",\n "hidden_act": }')
    err = run_cli_error(["--src", str(src)], capsys, tmp_path / "out")
    assert f"{src / 'config.json'}: not valid JSON" in err and "line 2 column 16" in err


def test_wrong_head_names_missing_keys(tmp_path, capsys):
    err = run_cli_error(["--src", os.path.join(HF, "nlvr2"), "--head", "pretraining"], capsys, tmp_path / "a")
    assert "missing cls.predictions" in err and "--head pretraining" in err
    err = run_cli_error(["--src", os.path.join(HF, "base"), "--head", "vqa"], capsys, tmp_path / "b")
    assert "missing cls.bias, cls.weight" in err


def test_a_task_head_other_than_the_checkpoints_is_refused(tmp_path, capsys):
    err = run_cli_error(["--src", os.path.join(HF, "nlvr2"), "--head", "vqa"], capsys, tmp_path / "a")
    assert err == (f"error: {os.path.join(HF, 'nlvr2')}: --head vqa does not match the checkpoint, which holds a nlvr2 "
                   "head (VisualBertForVisualReasoning) whose classifier means nlvr2's labels; convert with --head "
                   "nlvr2, or --head base to keep only the encoder")
    err = run_cli_error(["--src", os.path.join(ORIGINAL, "vqa_wrapped.th"), "--config", "visualbert-nlvr2",
                         "--head", "vqa"], capsys, tmp_path / "b")
    assert "--config visualbert-nlvr2: --head vqa does not match the checkpoint" in err
    assert cv.main(["--src", os.path.join(HF, "vqa"), "--head", "vqa", "--dst", str(tmp_path / "c")]) == 0


def test_base_head_takes_the_encoder_of_a_head_checkpoint():
    model = cv.convert_hf(os.path.join(HF, "nlvr2"), head="base")
    nlvr2 = cv.convert_hf(os.path.join(HF, "nlvr2"))
    np.testing.assert_array_equal(model.pooler.dense.weight.numpy(), nlvr2.visual_bert.pooler.dense.weight.numpy())


def test_missing_files_are_named(tmp_path, capsys):
    src = copy_fixture("nlvr2", tmp_path)
    os.remove(src / "model.safetensors")
    err = run_cli_error(["--src", str(src)], capsys, tmp_path / "out")
    assert str(src) in err and "model.safetensors or pytorch_model.bin" in err
    os.remove(src / "config.json")
    err = run_cli_error(["--src", str(src)], capsys, tmp_path / "out")
    assert os.path.join(str(src), "config.json") in err
    err = run_cli_error(["--src", str(tmp_path / "nowhere")], capsys, tmp_path / "out")
    assert "nowhere: no such file or directory" in err
    err = run_cli_error(["--src", os.path.join(ORIGINAL, "vqa_wrapped.th")], capsys, tmp_path / "out")
    assert "needs --config" in err


def test_existing_destination_is_kept_unless_overwrite(tmp_path, capsys):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    assert cv.main(["--src", os.path.join(HF, "nlvr2"), "--dst", str(dst)]) == 1
    assert "already exists" in capsys.readouterr().err and (dst / "keep.txt").exists()
    (dst / "model.safetensors").write_text("an older conversion, which would shadow the new weights")
    assert cv.main(["--src", os.path.join(HF, "nlvr2"), "--dst", str(dst), "--overwrite"]) == 0
    # only the checkpoint files are replaced: the user's own file stays
    assert sorted(os.listdir(dst)) == ["config.json", "keep.txt", "model_state.pdparams"]
    assert (dst / "keep.txt").read_text() == "mine"


def test_overwrite_refuses_a_destination_holding_the_source(tmp_path, capsys):
    dst = tmp_path / "out"
    shutil.copytree(os.path.join(HF, "nlvr2"), dst / "hf")
    for src, dst_arg in ((dst / "hf", dst), (dst / "hf", dst / "hf")):
        before = sorted(os.listdir(dst / "hf"))
        assert cv.main(["--src", str(src), "--dst", str(dst_arg), "--overwrite"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"error: --src {src} lies inside --dst {dst_arg}: writing there would replace the checkpoint "
                       "being converted; pick another --dst")
        assert sorted(os.listdir(dst / "hf")) == before


def test_help_describes_the_sources(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cv.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--src", "--dst", "--head", "--config", "original .th", "BERT", "region_alignment"):
        assert word in text


# --- untrusted pickles ------------------------------------------------------------------------------

def evil_zip(path, marker):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil(marker)}, protocol=2))
        z.writestr("archive/version", "3\n")


def evil_legacy(path, marker):
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            f.write(pickle.dumps(obj, protocol=2))
        f.write(pickle.dumps({"w": Evil(marker)}, protocol=2))
        f.write(pickle.dumps([], protocol=2))


@pytest.mark.parametrize("writer", [evil_zip, evil_legacy])
def test_malicious_pickle_runs_nothing(writer, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.th"
    writer(path, marker)
    with pytest.raises(UnsafePickleError, match="system"):
        load_torch_file(path)
    err = run_cli_error(["--src", str(path), "--config", "visualbert-vqa"], capsys, tmp_path / "out")
    assert "refusing to load" in err
    assert not marker.exists()


def test_truncated_legacy_file_is_an_error(tmp_path):
    data = open(os.path.join(ORIGINAL, "pretrain_legacy.th"), "rb").read()
    path = tmp_path / "cut.th"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_torch_file(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cut.th"):
        load_torch_file(path)
