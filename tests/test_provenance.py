"""Feature provenance: every store says how its features were made, every trained model says what
its inputs need (visualbert.provenance)."""
import json

import numpy as np
import pytest

from visualbert import provenance


def test_a_trained_run_and_its_saved_models_record_the_stores_provenance(shapes_vqa):
    store_meta = json.loads((shapes_vqa["feats"] / "meta.json").read_text())
    made = store_meta["provenance"]
    assert made["extractor"] == "visualbert.extract" and made["backbone"] == "patches"
    assert (made["weights"], made["image_size"], made["patch_size"], made["grid"]) == ("none", 64, 16, 4)
    assert made["boxes"] == "grid" and made["dtype"] == "float16" and made["reproducible"] is True
    run_config = json.loads((shapes_vqa["run"] / "run_config.json").read_text())
    assert run_config["feature_provenance"] == made
    saved = [shapes_vqa["run"] / "best", shapes_vqa["run"] / "model"] + sorted(shapes_vqa["run"].glob("checkpoint-*"))
    assert len(saved) >= 3
    for model_dir in saved:
        assert provenance.of_model(model_dir) == made, model_dir


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


@pytest.mark.parametrize("weights", ["file"])
def test_weights_file_is_recorded_by_sha256(tmp_path, weights):
    path = tmp_path / "w.pdparams"
    path.write_bytes(b"not really weights")
    record = provenance.extracted("resnet50", str(path), 448, 14, None, None, "float16")
    assert record["weights"] == "sha256:" + provenance.file_sha256(str(path))
    assert record["weights_file"] == str(path) and record["reproducible"] is True
