"""Using a trained model on a new image: visualbert.pipeline, python -m visualbert.ask, --explain."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_script

from visualbert import pipeline

pytestmark = pytest.mark.slow  # a model trained in subprocesses, the ask command run as a user runs it


@pytest.fixture(scope="module")
def vqa(shapes_vqa):
    return pipeline("visual-question-answering", str(shapes_vqa["model"]))


def test_answers_from_raw_images_equal_run_predict_on_the_whole_val_split(shapes_vqa, vqa, tmp_path):
    """The features are re-made from the PNGs (not read from the store) and still give prediction's answers."""
    result = tmp_path / "result.json"
    run_script(["VQA2/run_predict.py", "--questions", str(shapes_vqa["dir"] / "val_questions.json"),
                "--features", str(shapes_vqa["feats"]), "--image_key", "shape_{image_id:05d}",
                "--model_name_or_path", str(shapes_vqa["model"]), "--output", str(result), "--device", "cpu",
                "--num_workers", "0"])
    predicted = {r["question_id"]: r["answer"] for r in json.loads(result.read_text())}
    questions = json.loads((shapes_vqa["dir"] / "val_questions.json").read_text())["questions"]
    inputs = [{"image": str(shapes_vqa["images"] / f"shape_{q['image_id']:05d}.png"), "question": q["question"]}
              for q in questions]
    answers = vqa(inputs, top_k=1)
    assert len(answers) == len(questions) == 320
    assert [a[0]["answer"] for a in answers] == [predicted[q["question_id"]] for q in questions]


def test_features_of_a_raw_image_are_the_training_stores_rows_exactly(shapes_vqa, vqa):
    """Same extractor, same settings, same fp16 rounding: not close, equal."""
    from visualbert.pipelines import load_image, read_store_features

    keys = ["shape_00001", "shape_00100", "shape_50033"]
    made = vqa.featurizer([load_image(str(shapes_vqa["images"] / f"{k}.png")) for k in keys])
    for key, (rows, geometry) in zip(keys, made):
        stored, stored_geometry = read_store_features(str(shapes_vqa["feats"]), key)
        assert rows.dtype == np.float32 and np.array_equal(rows, stored), key
        np.testing.assert_array_equal(geometry, stored_geometry)


def test_pipeline_takes_paths_pil_and_numpy_alike_and_returns_transformers_shape(shapes_vqa, vqa):
    path = shapes_vqa["images"] / "shape_50003.png"
    question = "what color is the shape?"
    by_path = vqa(image=str(path), question=question, top_k=4)
    assert isinstance(by_path, list) and len(by_path) == 4
    assert all(set(a) == {"answer", "score"} and 0.0 <= a["score"] <= 1.0 for a in by_path)
    assert [a["score"] for a in by_path] == sorted((a["score"] for a in by_path), reverse=True)
    assert "<unk>" not in [a["answer"] for a in by_path]
    for other in (Image.open(path), np.asarray(Image.open(path)), path.read_bytes()):
        same = vqa(image=other, question=question, top_k=4)
        assert [a["answer"] for a in same] == [a["answer"] for a in by_path]
        np.testing.assert_allclose([a["score"] for a in same], [a["score"] for a in by_path], rtol=1e-5)
    several = vqa(image=str(path), question=[question, "what shape is in the picture?"], top_k=4)
    assert [a["answer"] for a in several[0]] == [a["answer"] for a in by_path]
    np.testing.assert_allclose([a["score"] for a in several[0]], [a["score"] for a in by_path], rtol=1e-5)


def test_ask_prints_answers_of_several_questions_json_and_explain_picture(shapes_vqa, vqa, tmp_path):
    image = shapes_vqa["images"] / "shape_50005.png"
    questions = ["what shape is in the picture?", "what color is the shape?"]
    picture = tmp_path / "where.png"
    proc = run_script(["-m", "visualbert.ask", "--model", str(shapes_vqa["model"]), "--image", str(image),
                       "--question", questions[0], "--question", questions[1], "--top_k", "3", "--json",
                       "--explain", str(picture)])
    result = json.loads(proc.stdout)
    expected = vqa(image=str(image), question=questions, top_k=3)
    assert [r["question"] for r in result["results"]] == questions
    for got, want in zip(result["results"], expected):
        assert [a["answer"] for a in got["answers"]] == [a["answer"] for a in want]
    assert result["explain"] == str(picture)
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size[0] >= 400
    text = run_script(["-m", "visualbert.ask", "--model", str(shapes_vqa["model"]), "--image", str(image),
                       "--question", questions[1], "--top_k", "2"]).stdout.splitlines()
    assert text[0] == f"Q: {questions[1]}" and len(text) == 3
    assert text[1].split()[0] == expected[1][0]["answer"]


def test_explain_weights_are_a_distribution_over_the_grid_cells(shapes_vqa, vqa):
    (item,) = vqa.answer([(str(shapes_vqa["images"] / "shape_50001.png"), "what color is the shape?")], explain=True)
    assert item["attention"].shape == (16,) and item["geometry"].shape == (16, 6)
    assert item["attention"].sum() == pytest.approx(1.0, abs=1e-5) and (item["attention"] >= 0).all()


def _save_model(head, config_path, out, record, visual_dim=None):
    from visualbert.modeling import VisualBertConfig

    fields = json.loads(open(config_path).read())
    if visual_dim:
        fields["visual_embedding_dim"] = visual_dim
    config = VisualBertConfig(**fields)
    config.feature_provenance = record
    head(config).save_pretrained(str(out))
    return out


def test_model_on_imported_features_says_so_in_one_line_and_takes_store_features(tmp_path, tiny_config):
    from visualbert import provenance
    from visualbert.features.importers import import_features
    from visualbert.modeling import VisualBertForQuestionAnswering

    src = tmp_path / "npz"
    src.mkdir()
    np.save(src / "img7.npy", np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32))
    store, _ = import_features("npz_dir", [str(src)], str(tmp_path / "store"), progress=False)
    record = json.loads((tmp_path / "store" / "meta.json").read_text())["provenance"]
    model = _save_model(VisualBertForQuestionAnswering, tiny_config(dropout=0.0, num_labels=3129),
                        tmp_path / "model", record, visual_dim=32)
    Image.new("RGB", (20, 20)).save(tmp_path / "x.png")
    proc = run_script(["-m", "visualbert.ask", "--model", str(model), "--image", str(tmp_path / "x.png"),
                       "--question", "what?"], check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot make this model's features from a raw image" in lines[0]
    assert "--features STORE --key KEY" in lines[0] and not provenance.reproducible(record)
    ok = run_script(["-m", "visualbert.ask", "--model", str(model), "--features", store, "--key", "img7",
                     "--question", "what is it?", "--json", "--explain", str(tmp_path / "bars.png")])
    assert len(json.loads(ok.stdout)["results"][0]["answers"]) == 5
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one bar per region: no picture
    missing = run_script(["-m", "visualbert.ask", "--model", str(model), "--features", store, "--key", "nope",
                          "--question", "what?"], check=False)
    assert missing.returncode == 1 and "no features for key 'nope'" in missing.stderr


def test_nlvr2_model_answers_true_or_false_with_its_probability(shapes_vqa, tmp_path, tiny_config):
    from visualbert import provenance
    from visualbert.modeling import VisualBertForVisualReasoning
    from visualbert.pipelines import read_store_features

    record = provenance.of_model(shapes_vqa["model"])
    feature_dim = read_store_features(str(shapes_vqa["feats"]), "shape_50001")[0].shape[1]
    model = _save_model(VisualBertForVisualReasoning, tiny_config(dropout=0.0, num_labels=2), tmp_path / "nlvr2",
                        record, visual_dim=feature_dim)
    left, right = shapes_vqa["images"] / "shape_50001.png", shapes_vqa["images"] / "shape_50002.png"
    proc = run_script(["-m", "visualbert.ask", "--model", str(model), "--image", str(left), "--image2", str(right),
                       "--question", "the left image has a triangle.", "--json"])
    (item,) = json.loads(proc.stdout)["results"]
    direct = pipeline("visual-reasoning", str(model))(image=str(left), image2=str(right),
                                                      statement="the left image has a triangle.")
    assert item["answer"] == direct["answer"] and 0.5 <= item["score"] <= 1.0
    assert item["score"] == pytest.approx(direct["score"], abs=1e-6)
    wrong = run_script(["-m", "visualbert.ask", "--model", str(model), "--image", str(left), "--question", "x"],
                       check=False)
    assert wrong.returncode == 1 and "pass --image2" in wrong.stderr


def test_onnxruntime_engine_answers_as_the_dygraph_model_on_the_val_split_and_in_ask(shapes_vqa, tmp_path):
    questions = json.loads((shapes_vqa["dir"] / "val_questions.json").read_text())["questions"]
    inputs = [{"image": str(shapes_vqa["images"] / f"shape_{q['image_id']:05d}.png"), "question": q["question"]}
              for q in questions]
    by_onnx = pipeline("vqa", str(shapes_vqa["model"]), engine="onnxruntime")(inputs, top_k=1)
    by_dygraph = pipeline("vqa", str(shapes_vqa["model"]), engine="dygraph")(inputs, top_k=1)
    assert len(by_onnx) == 320
    assert [a[0]["answer"] for a in by_onnx] == [a[0]["answer"] for a in by_dygraph]

    image = shapes_vqa["images"] / "shape_50005.png"
    asked = ["--model", str(shapes_vqa["model"]), "--image", str(image), "--question", "what shape is in the picture?",
             "--question", "what color is the shape?", "--top_k", "3"]
    printed = {engine: run_script(["-m", "visualbert.ask", *asked, "--engine", engine]).stdout
               for engine in ("onnxruntime", "dygraph")}
    assert printed["onnxruntime"].startswith("Q: what shape is in the picture?")
    answers = {engine: [line.split()[0] for line in out.splitlines() if not line.startswith("Q:")]
               for engine, out in printed.items()}
    assert len(answers["onnxruntime"]) == 6 and answers["onnxruntime"] == answers["dygraph"]


def test_a_missing_model_is_one_line_naming_the_path_not_another_commands_flag(tmp_path):
    with pytest.raises(SystemExit) as e:
        pipeline("vqa", str(tmp_path / "none"))
    message = str(e.value)
    assert message.startswith("error: ") and str(tmp_path / "none") in message and "--model_name_or_path" not in message
