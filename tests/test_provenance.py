"""Feature provenance: every store says how its features were made, every trained model says what
its inputs need (visualbert.provenance)."""
import json

import numpy as np
import pytest

from visualbert import provenance


@pytest.mark.slow  # trains a model in subprocesses
def test_a_trained_run_and_its_saved_models_record_the_stores_provenance(shapes_vqa):
    store_meta = json.loads((shapes_vqa["feats"] / "meta.json").read_text())
    made = store_meta["provenance"]
    assert made["extractor"] == "visualbert.extract" and made["backbone"] == "patches_hog"
    assert (made["weights"], made["image_size"], made["patch_size"], made["grid"]) == ("none", 64, 4, 4)
    assert made["boxes"] == "grid" and made["dtype"] == "float16" and made["reproducible"] is True
    run_config = json.loads((shapes_vqa["run"] / "run_config.json").read_text())
    assert run_config["feature_provenance"] == made
    saved = [shapes_vqa["run"] / "best", shapes_vqa["run"] / "model"] + sorted(shapes_vqa["run"].glob("checkpoint-*"))
    assert len(saved) >= 3
    for model_dir in saved:  # in the model's own config: the directory alone says how to make its inputs
        assert json.loads((model_dir / "config.json").read_text())["feature_provenance"] == made, model_dir
        assert provenance.of_model(model_dir) == made


def test_extract_with_weights_file_and_boxes_records_hash_and_that_it_needs_boxes(tmp_path):
    from visualbert.extract import extract

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(images / "a.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a": [[0, 0, 10, 10], [5, 5, 30, 20]]}))
    out, _ = extract(str(images), str(tmp_path / "feats"), backbone="patches", boxes=str(boxes), image_size=16,
                     patch_size=2, num_workers=0, progress=False)
    record = json.loads((tmp_path / "feats" / "meta.json").read_text())["provenance"]
    assert record["boxes"] == "given" and record["boxes_file"] == str(boxes)
    assert record["reproducible"] is False and "--boxes" in record["why"]


def test_imported_and_detectron_features_record_they_cannot_be_remade(tmp_path, demo_dir):
    from visualbert.features import open_features
    from visualbert.features.importers import import_features

    src = tmp_path / "npz"
    src.mkdir()
    np.save(src / "img1.npy", np.ones((3, 8), dtype=np.float32))
    out, bad = import_features("npz_dir", [str(src)], str(tmp_path / "imported"), progress=False)
    assert not bad
    record = json.loads((tmp_path / "imported" / "meta.json").read_text())["provenance"]
    assert record["extractor"] == "import" and record["reproducible"] is False
    detectron = provenance.of_store(open_features("coco_detectron_fix_100", str(demo_dir / "X_COCO")))
    assert detectron["extractor"] == "detectron" and detectron["reproducible"] is False
    assert "Detectron" in detectron["why"]


def test_weights_file_is_recorded_by_sha256(tmp_path):
    path = tmp_path / "w.pdparams"
    path.write_bytes(b"not really weights")
    record = provenance.extracted("resnet50", str(path), 448, 14, None, None, "float16")
    assert record["weights"] == "sha256:" + provenance.file_sha256(str(path))
    assert record["weights_file"] == str(path) and record["reproducible"] is True


def test_moved_or_changed_backbone_weights_are_named_in_one_line(tmp_path):
    from visualbert.pipelines import FeaturesUnavailable, ImageFeaturizer

    path = tmp_path / "w.pdparams"
    path.write_bytes(b"weights as they were")
    record = provenance.extracted("resnet50", str(path), 448, 14, None, None, "float16")
    path.write_bytes(b"weights changed since")
    with pytest.raises(FeaturesUnavailable, match="not the backbone weights the model's features were made with"):
        ImageFeaturizer(record)
    path.unlink()
    with pytest.raises(FeaturesUnavailable, match="which are not there; pass that .pdparams file as --weights"):
        ImageFeaturizer(record)


def test_a_model_on_given_boxes_needs_the_new_images_boxes(tmp_path):
    from PIL import Image

    from visualbert.pipelines import FeaturesUnavailable, ImageFeaturizer

    record = provenance.extracted("patches", "none", 16, None, 2, str(tmp_path / "boxes.json"), "float16")
    featurize = ImageFeaturizer(record)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    with pytest.raises(FeaturesUnavailable, match="give the new image's boxes with --boxes"):
        featurize([image])
    ((rows, geometry),) = featurize([image], boxes=[[[0, 0, 10, 10], [5, 5, 30, 20]]])
    assert rows.shape == (2, 12) and geometry.shape == (2, 6)
    np.testing.assert_allclose(geometry[1, :4], [5 / 30, 5 / 20, 1.0, 1.0])
