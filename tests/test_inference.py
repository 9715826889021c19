"""Paddle Inference (visualbert.inference) and ONNX Runtime (visualbert.onnx_engine): the exported program
answers as the dygraph model does, the cache beside the weights is made once and again when the weights
change, and training never builds a predictor."""
import json
import os

import numpy as np
import paddle
import pytest

from visualbert import inference, modeling


def _tiny_model(tiny_config, head, path, seed=0, num_labels=5):
    with open(tiny_config(dropout=0.1)) as f:
        fields = json.load(f)
    fields["num_labels"] = num_labels
    paddle.seed(seed)
    model = head(modeling.VisualBertConfig(**fields))
    model.save_pretrained(str(path))
    model.eval()
    return model


def _padded_batch(rng, dim, text_lengths, region_counts, two_images=False):
    """One collated batch: text and regions padded to the batch max, masks zero on the padding."""
    batch, text, regions = len(text_lengths), max(text_lengths), max(region_counts)
    x = {"input_ids": rng.integers(1, 100, (batch, text)), "attention_mask": np.zeros((batch, text)),
         "token_type_ids": np.zeros((batch, text)), "visual_embeds": rng.standard_normal((batch, regions, dim)),
         "visual_attention_mask": np.zeros((batch, regions)), "visual_token_type_ids": np.zeros((batch, regions))}
    for b, (t, r) in enumerate(zip(text_lengths, region_counts)):
        x["attention_mask"][b, :t] = 1
        x["input_ids"][b, t:] = 0
        x["visual_attention_mask"][b, :r] = 1
        if two_images:
            x["visual_token_type_ids"][b, r // 2:r] = 1
    return {k: v.astype(np.float32 if k == "visual_embeds" else np.int64) for k, v in x.items()}


@pytest.mark.parametrize("engine", inference.EXPORTED_ENGINES)
@pytest.mark.parametrize("head", [modeling.VisualBertForQuestionAnswering, modeling.VisualBertForVisualReasoning])
def test_exported_engines_logits_equal_the_dygraph_models_on_padded_batches(tmp_path, tiny_config, head, engine):
    from visualbert.onnx_engine import OnnxModel

    model = _tiny_model(tiny_config, head, tmp_path / "model")
    runner = inference.load_inference_model(head, str(tmp_path / "model"), threads=1, engine=engine)
    assert isinstance(runner, {"paddle_inference": inference.InferenceModel, "onnxruntime": OnnxModel}[engine])
    rng = np.random.default_rng(0)
    two_images = head is modeling.VisualBertForVisualReasoning
    # batches of different sizes and lengths through one predictor: its shapes are dynamic; the last is run
    # in chunks (rows_per_run), each cut to its own longest text
    many = 2 * inference.ExportedModel.rows_per_run + 3
    for lengths, regions in [((7, 4, 9), (5, 3, 5)), ((3,), (2,)), ((12, 12), (8, 1)),
                             (tuple(rng.integers(2, 13, many)), tuple(rng.integers(1, 6, many)))]:
        x = _padded_batch(rng, model.config.visual_embedding_dim, lengths, regions, two_images)
        with paddle.no_grad():
            expected = model(**{k: paddle.to_tensor(v) for k, v in x.items()}).logits.numpy()
        got = runner(**{k: paddle.to_tensor(v) for k, v in x.items()}).logits.numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_the_program_is_cached_beside_the_model_and_made_again_when_the_weights_change(tmp_path, tiny_config):
    head = modeling.VisualBertForQuestionAnswering
    _tiny_model(tiny_config, head, tmp_path / "model", seed=0)
    program = inference.export(str(tmp_path / "model"), head)
    assert program == str(tmp_path / "model" / "inference")
    made = os.stat(os.path.join(program, "model.pdiparams")).st_mtime_ns
    assert inference.export(str(tmp_path / "model"), head) == program
    assert os.stat(os.path.join(program, "model.pdiparams")).st_mtime_ns == made  # reused, not made again
    assert not [n for n in os.listdir(tmp_path / "model") if n.startswith(".tmp")]

    retrained = _tiny_model(tiny_config, head, tmp_path / "model", seed=1)  # new weights in the same directory
    runner = inference.load_inference_model(head, str(tmp_path / "model"), threads=1)
    x = _padded_batch(np.random.default_rng(1), retrained.config.visual_embedding_dim, (6, 4), (3, 2))
    with paddle.no_grad():
        expected = retrained(**{k: paddle.to_tensor(v) for k, v in x.items()}).logits.numpy()
    np.testing.assert_allclose(runner(**x).logits.numpy(), expected, atol=1e-4, rtol=0)


def test_the_default_engine_is_onnxruntime_on_the_cpu_in_one_process():
    assert inference.default_engine("cpu") == "onnxruntime"
    assert inference.default_engine("cpu", processes=2) == "dygraph"
    assert inference.default_engine("cpu", model_dir=False) == "dygraph"  # a config file: nothing to export
    assert inference.default_engine("gpu") == "dygraph"


class _RowSums(inference.ExportedModel):
    """An engine whose logits are per-row sums of its text inputs, recording the shape of every run."""

    def __init__(self):
        super().__init__(program_dir=None, config=None)
        self.runs = []

    def _run(self, arrays):
        self.runs.append(arrays["input_ids"].shape)
        return np.stack([arrays["input_ids"].sum(axis=1), arrays["visual_embeds"].sum(axis=(1, 2))], axis=1)


def test_a_large_batch_runs_in_chunks_of_similar_length_each_cut_to_its_longest_text():
    rng = np.random.default_rng(3)
    lengths = rng.integers(2, 30, 2 * _RowSums.rows_per_run + 5)
    x = _padded_batch(rng, 4, tuple(lengths), tuple(rng.integers(1, 4, len(lengths))))
    engine = _RowSums()
    got = engine(**x).logits.numpy()
    # every row's answer lands on its own row, computed from all of its tokens
    np.testing.assert_allclose(got[:, 0], x["input_ids"].sum(axis=1))
    np.testing.assert_allclose(got[:, 1], x["visual_embeds"].sum(axis=(1, 2)), rtol=1e-6)
    assert [rows for rows, _ in engine.runs] == [16, 16, len(lengths) - 32]
    # rows taken longest first: each chunk is cut to its own longest text
    ordered = np.sort(lengths)[::-1]
    assert [text for _, text in engine.runs] == [ordered[0], ordered[16], ordered[32]]
    assert engine.runs[-1][1] < x["input_ids"].shape[1]

    small = _RowSums()
    small(**{k: v[:5] for k, v in x.items()})
    assert small.runs == [(5, x["input_ids"].shape[1])]  # a batch of rows_per_run or fewer runs as it came


# Runs a script with paddle.inference.create_predictor wrapped: every predictor made leaves a line in MARKS.
_WATCHED = """
import os, runpy, sys
import paddle.inference as pi
real = pi.create_predictor
def watched(config):
    with open(os.environ["MARKS"], "a") as f:
        f.write("predictor\\n")
    return real(config)
pi.create_predictor = watched
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow  # a tiny VQA training run and a prediction, each in its own process
def test_training_and_its_evaluation_never_build_a_predictor_prediction_does(demo_dir, tiny_config, tmp_path):
    from conftest import run_script

    marks = tmp_path / "marks.txt"
    out = tmp_path / "run"
    fast = ["--device", "cpu", "--num_workers", "0", "--seed", "1"]
    run_script(["-c", _WATCHED, "VQA2/run_vqa2.py", "--input_dir", str(demo_dir / "X_COCO"), "--output_dir", str(out),
                "--model_name_or_path", tiny_config(0.0), "--train_split", "train", "--eval_split", "val",
                "--batch_size", "64", "--max_steps", "3", "--save_steps", "1000", *fast], env={"MARKS": str(marks)})
    assert (out / "best" / "eval_results.json").exists()  # it evaluated, on the dygraph model
    assert not marks.exists()

    run_script(["-c", _WATCHED, "VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"),
                "--model_name_or_path", str(out / "best"), "--split", "val", "--output", str(tmp_path / "val.json"),
                "--engine", "paddle_inference", *fast], env={"MARKS": str(marks)})
    assert marks.read_text() == "predictor\n"
    assert (out / "best" / "inference" / "model.pdiparams").exists()

    # the demo's val split: every top answer of the predictor is the dygraph model's
    run_script(["VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"), "--model_name_or_path",
                str(out / "best"), "--split", "val", "--output", str(tmp_path / "val-dygraph.json"),
                "--engine", "dygraph", *fast])
    by_predictor = json.loads((tmp_path / "val.json").read_text())
    assert len(by_predictor) > 100
    assert by_predictor == json.loads((tmp_path / "val-dygraph.json").read_text())
    # and through ONNX Runtime, the default: the same answers again, its file beside the program
    run_script(["VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"), "--model_name_or_path",
                str(out / "best"), "--split", "val", "--output", str(tmp_path / "val-onnx.json"), *fast])
    assert json.loads((tmp_path / "val-onnx.json").read_text()) == by_predictor
    assert (out / "best" / "inference" / "model.onnx").exists()


def test_a_read_only_model_directory_caches_its_program_in_the_users_cache(tmp_path, tiny_config, monkeypatch):
    head = modeling.VisualBertForVisualReasoning
    _tiny_model(tiny_config, head, tmp_path / "model")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    writable = os.access

    def access(path, mode):  # the model's directory only: as if it were read-only
        return False if os.path.samefile(path, tmp_path / "model") else writable(path, mode)

    monkeypatch.setattr(inference.os, "access", access)
    program = inference.export(str(tmp_path / "model"), head)
    assert program.startswith(str(tmp_path / "cache" / "visualbert" / "inference"))
    assert os.path.isfile(os.path.join(program, "model.pdiparams"))
    assert "inference" not in os.listdir(tmp_path / "model")


# ---------------------------------------------------------------------------- --engine onnxruntime


def test_the_onnx_file_shares_the_programs_cache_and_is_made_again_when_the_weights_change(tmp_path, tiny_config):
    head = modeling.VisualBertForQuestionAnswering
    _tiny_model(tiny_config, head, tmp_path / "model", seed=0)
    program = inference.export(str(tmp_path / "model"), head)
    assert "model.onnx" not in os.listdir(program)  # Paddle Inference alone converts nothing
    assert inference.export(str(tmp_path / "model"), head, onnx=True) == program  # the program's cache, ONNX added
    onnx_file = os.path.join(program, "model.onnx")
    made = os.stat(onnx_file).st_mtime_ns
    assert sorted(os.listdir(program)) == ["fingerprint.json", "model.json", "model.onnx", "model.pdiparams"]
    assert inference.export(str(tmp_path / "model"), head, onnx=True) == program
    assert inference.export(str(tmp_path / "model"), head) == program
    assert os.stat(onnx_file).st_mtime_ns == made  # reused by both engines, not made again
    assert not [n for n in os.listdir(tmp_path / "model") if n.startswith(".tmp")]

    retrained = _tiny_model(tiny_config, head, tmp_path / "model", seed=1)
    runner = inference.load_inference_model(head, str(tmp_path / "model"), threads=1, engine="onnxruntime")
    x = _padded_batch(np.random.default_rng(1), retrained.config.visual_embedding_dim, (6, 4), (3, 2))
    with paddle.no_grad():
        expected = retrained(**{k: paddle.to_tensor(v) for k, v in x.items()}).logits.numpy()
    np.testing.assert_allclose(runner(**x).logits.numpy(), expected, atol=1e-4, rtol=0)


def test_onnxruntime_with_a_read_only_model_directory_caches_in_the_users_cache(tmp_path, tiny_config, monkeypatch):
    head = modeling.VisualBertForVisualReasoning
    _tiny_model(tiny_config, head, tmp_path / "model")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    writable = os.access
    monkeypatch.setattr(inference.os, "access", lambda path, mode: False if os.path.samefile(
        path, tmp_path / "model") else writable(path, mode))
    runner = inference.load_inference_model(head, str(tmp_path / "model"), threads=1, engine="onnxruntime")
    assert runner.program_dir.startswith(str(tmp_path / "cache" / "visualbert" / "inference"))
    assert os.path.isfile(os.path.join(runner.program_dir, "model.onnx"))
    assert "inference" not in os.listdir(tmp_path / "model")


@pytest.mark.parametrize("missing", ["onnxruntime", "paddle2onnx"])
def test_onnxruntime_without_its_packages_says_so_in_one_line(tmp_path, tiny_config, monkeypatch, missing):
    head = modeling.VisualBertForQuestionAnswering
    _tiny_model(tiny_config, head, tmp_path / "model")
    monkeypatch.setitem(__import__("sys").modules, missing, None)  # as if not installed: importing it fails
    with pytest.raises(SystemExit) as stop:
        inference.load_inference_model(head, str(tmp_path / "model"), engine="onnxruntime")
    message = str(stop.value.code)
    assert message.startswith("error: --engine onnxruntime needs the " + missing) and "\n" not in message
    assert "inference" not in os.listdir(tmp_path / "model")  # nothing exported before the check


def test_a_failed_conversion_leaves_the_cached_program_as_it_was_and_nothing_half_written(tmp_path, tiny_config,
                                                                                         monkeypatch):
    from visualbert import onnx_engine

    head = modeling.VisualBertForQuestionAnswering
    _tiny_model(tiny_config, head, tmp_path / "model")
    program = inference.export(str(tmp_path / "model"), head)
    before = sorted(os.listdir(program))

    def broken(program_prefix):
        print("converter step output")
        raise RuntimeError("the converter failed")

    monkeypatch.setattr(onnx_engine, "convert", broken)
    with pytest.raises(RuntimeError, match="the converter failed"):
        inference.export(str(tmp_path / "model"), head, onnx=True)
    assert sorted(os.listdir(program)) == before
    assert sorted(os.listdir(tmp_path / "model")) == ["config.json", "inference", "model_state.pdparams"]
