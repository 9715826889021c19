"""python -m visualbert.features import: bottom-up-attention TSV, HDF5 and .npy/.npz folders -> packed store."""
import base64
import json
import os

import h5py
import numpy as np
import pytest
from conftest import run_script

from visualbert.features.importers import import_features
from visualbert.features import PackedStore, open_feature_dir


def b64(arr):
    return base64.b64encode(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).decode()


def butd_images(dim=2048):
    rng = np.random.default_rng(0)
    images = {}
    for image_id, n, (w, h) in ((42, 36, (640, 480)), (7, 10, (500, 375)), (123456, 100, (320, 240))):
        x1 = rng.uniform(0, w / 2, n)
        y1 = rng.uniform(0, h / 2, n)
        boxes = np.stack([x1, y1, x1 + rng.uniform(1, w / 2, n), y1 + rng.uniform(1, h / 2, n)], 1).astype(np.float32)
        images[str(image_id)] = (rng.standard_normal((n, dim)).astype(np.float32), boxes, w, h)
    return images


def butd_line(key, feats, boxes, w, h):
    return "\t".join([key, str(w), str(h), str(len(feats)), b64(boxes), b64(feats)]) + "\n"


def test_butd_tsv_rows_and_box_geometry(tmp_path):
    images = butd_images()
    src = tmp_path / "trainval_36.tsv"
    src.write_text("".join(butd_line(k, *v) for k, v in images.items()))
    out, corrupt = import_features("butd_tsv", [str(src)], str(tmp_path / "feats"), dtype="float32", progress=False)
    assert corrupt == []
    store = PackedStore(out)
    assert sorted(store.keys()) == ["123456", "42", "7"] and store.dim == 2048
    for key, (feats, boxes, w, h) in images.items():
        np.testing.assert_array_equal(store.get(key), feats)
        geometry = store.extra("boxes", key)
        np.testing.assert_allclose(geometry[:, :4], np.clip(boxes / [w, h, w, h], 0, 1), rtol=1e-6)
        np.testing.assert_allclose(geometry[:, 4], geometry[:, 2] - geometry[:, 0], atol=1e-6)
    # the VQA scripts find "{image_id}" keys in it with --features
    assert open_feature_dir(out, max_regions=36).get("123456").shape == (36, 2048)


def test_lxmert_ten_field_tsv(tmp_path):
    feats, boxes, w, h = butd_images(dim=8)["42"]
    fields = ["COCO_val2014_000000000042", str(h), str(w), b64(np.zeros(36)), b64(np.zeros(36)), b64(np.zeros(36)),
              b64(np.zeros(36)), "36", b64(boxes), b64(feats)]
    src = tmp_path / "val.tsv"
    src.write_text("\t".join(fields) + "\n")
    out, _ = import_features("butd_tsv", [str(src)], str(tmp_path / "feats"), dtype="float32", progress=False)
    store = PackedStore(out)
    np.testing.assert_array_equal(store.get("COCO_val2014_000000000042"), feats)
    np.testing.assert_allclose(store.extra("boxes", "COCO_val2014_000000000042")[:, 2], np.clip(boxes[:, 2] / w, 0, 1),
                               rtol=1e-6)


def test_corrupt_tsv_rows_are_named_nothing_is_published_and_a_fixed_rerun_resumes(tmp_path):
    images = butd_images(dim=16)
    good = [butd_line(k, *v) for k, v in images.items()]
    feats, boxes, w, h = images["7"]
    bad = [
        "\t".join(["99", "10", "10", "2", b64(boxes[:2]), "%%%notbase64"]) + "\n",         # line 2
        "\t".join(["98", "10", "10", "3", b64(boxes[:2]), b64(feats[:3])]) + "\n",         # line 4: 2 boxes for 3
        "only\tthree\tfields\n",                                                         # line 5
        "\t".join(["97", "10", "10", "2", b64(boxes[:2]), b64(feats[:2, :8])]) + "\n",   # line 6: dim 8, not 16
    ]
    src = tmp_path / "x.tsv"
    src.write_text(good[0] + bad[0] + good[1] + bad[1] + bad[2] + bad[3] + good[2])
    lines = []
    out, corrupt = import_features("butd_tsv", [str(src)], str(tmp_path / "feats"), progress=False, log=lines.append)
    assert out is None and not os.path.exists(tmp_path / "feats")
    assert len(corrupt) == 4 and lines == [f"corrupt: {c}" for c in corrupt]
    assert corrupt[0].startswith(f"{src}:2 (image_id 99): features are not valid base64")
    assert corrupt[1].startswith(f"{src}:4 (image_id 98): boxes hold 8 floats, num_boxes 3 needs 12")
    assert corrupt[2].startswith(f"{src}:5: 3 tab-separated fields, expected 6")
    assert corrupt[3].startswith(f"{src}:6 (image_id 97): feature dim 8, the images before it have 16")

    # fixed in place: the three good images were kept and are not decoded again
    src.write_text("".join(good))
    out, corrupt = import_features("butd_tsv", [str(src)], str(tmp_path / "feats"), progress=False)
    assert corrupt == [] and sorted(PackedStore(out).keys()) == ["123456", "42", "7"]
    assert not os.path.exists(str(tmp_path / "feats") + ".partial")


def test_h5_one_dataset_per_image_and_one_array_with_ids(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 32)).astype(np.float32), rng.standard_normal((3, 32)).astype(np.float32)
    with h5py.File(tmp_path / "per_image.h5", "w") as f:
        f["COCO_val2014_000000000001"] = a
        group = f.create_group("nested").create_group("img2")
        group["features"] = b
        group["boxes"] = np.ones((3, 4), np.float32)  # describes img2; not an image of its own
    out, corrupt = import_features("h5", [str(tmp_path / "per_image.h5")], str(tmp_path / "s1"), dtype="float32",
                                   progress=False)
    store = PackedStore(out)
    assert corrupt == [] and sorted(store.keys()) == ["COCO_val2014_000000000001", "nested/img2"]
    np.testing.assert_array_equal(store.get("nested/img2"), b)

    feats = rng.standard_normal((3, 4, 32)).astype(np.float32)
    with h5py.File(tmp_path / "one_array.h5", "w") as f:
        f["image_features"] = feats
        f["image_ids"] = np.array([b"x1", b"x2", b"x3"])
        f["num_boxes"] = np.array([4, 2, 3])
    out, _ = import_features("h5", [str(tmp_path / "one_array.h5")], str(tmp_path / "s2"), dtype="float32", progress=False)
    store = PackedStore(out)
    assert [store.rows(k) for k in ("x1", "x2", "x3")] == [4, 2, 3]
    np.testing.assert_array_equal(store.get("x2"), feats[1, :2])


def test_corrupt_h5_images_are_named(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["good"] = np.ones((2, 8), np.float32)
        f["nan"] = np.full((2, 8), np.nan, np.float32)
        f["flat"] = np.ones(8, np.float32)
    out, corrupt = import_features("h5", [str(tmp_path / "bad.h5")], str(tmp_path / "s"), progress=False, log=lambda _: None)
    assert out is None and len(corrupt) == 2
    # the check every feature reader shares (features.layouts.check_rows), with the dataset named
    assert "bad.h5:flat: expected a [N, D] feature array, found shape (8,)" in corrupt[0]
    assert "bad.h5:nan: the region features contain NaN or Inf" in corrupt[1]
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    _, corrupt = import_features("h5", [str(tmp_path / "garbage.h5")], str(tmp_path / "s3"), progress=False,
                                 log=lambda _: None)
    assert "garbage.h5: not a readable HDF5 file" in corrupt[0]


def test_npz_dir_keys_geometry_and_corrupt_files(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "feats_dir"
    os.makedirs(src / "dev")
    x = rng.standard_normal((4, 16)).astype(np.float32)
    boxes = np.array([[0, 0, 50, 100], [10, 10, 20, 20], [0, 0, 100, 200], [5, 5, 6, 6]], np.float32)
    np.savez(src / "dev" / "dev-850-0-img0.png.npz", x=x, bbox=boxes, image_w=100, image_h=200, num_bbox=4)
    np.savez(src / "dev" / "dev-850-0-img1.png.npz", x=x[:2], bbox=boxes[:2], image_w=100, image_h=200, num_bbox=2)
    out, corrupt = import_features("npz_dir", [str(src)], str(tmp_path / "s"), dtype="float32", progress=False)
    store = PackedStore(out)
    assert corrupt == [] and sorted(store.keys()) == ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"]
    np.testing.assert_allclose(store.extra("boxes", "dev/dev-850-0-img0.png")[0], [0, 0, 0.5, 0.5, 0.5, 0.5])

    plain = tmp_path / "plain"
    os.makedirs(plain)
    np.save(plain / "dev-850-0-img0.png.npy", x)
    np.save(plain / "evil.npy", np.array([os.system], dtype=object), allow_pickle=True)  # would call a function
    (plain / "cut.npy").write_bytes((plain / "dev-850-0-img0.png.npy").read_bytes()[:100])
    (plain / "notzip.npz").write_bytes(b"PK nothing")
    out, corrupt = import_features("npz_dir", [str(plain)], str(tmp_path / "s2"), progress=False, log=lambda _: None)
    assert out is None and [c.split(":")[0] for c in corrupt] == [str(plain / n) for n in ("cut.npy", "evil.npy", "notzip.npz")]
    for name in ("cut.npy", "evil.npy", "notzip.npz"):
        os.remove(plain / name)
    out, _ = import_features("npz_dir", [str(plain)], str(tmp_path / "s2"), dtype="float32", progress=False)
    # NLVR2 names the image dev-850-0-img0.png; the key is that, from dev-850-0-img0.png.npy
    np.testing.assert_array_equal(open_feature_dir(out).get("dev-850-0-img0.png"), x)


def test_imported_rows_pass_the_check_of_per_image_files(tmp_path):
    """Importing refuses what reading a per-image file refuses: complex values (which casting would cut
    to their real part), booleans, zero columns, values past float32's range."""
    src = tmp_path / "src"
    os.makedirs(src)
    np.save(src / "good.npy", np.ones((2, 4), np.float32))
    np.save(src / "complex.npy", np.ones((2, 4), np.complex64))
    np.save(src / "flags.npy", np.ones((2, 4), bool))
    np.save(src / "empty_rows.npy", np.ones((2, 0), np.float32))
    np.save(src / "huge.npy", np.full((2, 4), 1e300))
    out, corrupt = import_features("npz_dir", [str(src)], str(tmp_path / "s"), progress=False, log=lambda _: None)
    assert out is None and corrupt == [
        f"{src / 'complex.npy'}: expected a numeric [N, D] feature array, found dtype complex64",
        f"{src / 'empty_rows.npy'}: feature array has zero columns",
        f"{src / 'flags.npy'}: expected a numeric [N, D] feature array, found dtype bool",
        f"{src / 'huge.npy'}: the region features contain NaN or Inf (extract or import them again)",
    ]


def test_rows_the_store_dtype_cannot_hold_are_named_with_the_other_corrupt_images(tmp_path):
    """A value past float16's range is one more corrupt image, listed with the rest, not the end of the run."""
    src = tmp_path / "src"
    os.makedirs(src)
    np.save(src / "a_big.npy", np.full((2, 4), 1e5, np.float32))
    np.save(src / "b_nan.npy", np.full((2, 4), np.nan, np.float32))
    np.save(src / "c_good.npy", np.ones((2, 4), np.float32))
    out, corrupt = import_features("npz_dir", [str(src)], str(tmp_path / "s"), dtype="float16", progress=False,
                                   log=lambda _: None)
    assert out is None and corrupt == [
        f"{src / 'a_big.npy'} as float16: the region features of image 'a_big' contain NaN or Inf (extract or import them again)",
        f"{src / 'b_nan.npy'}: the region features contain NaN or Inf (extract or import them again)",
    ]
    out, corrupt = import_features("npz_dir", [str(src)], str(tmp_path / "s32"), dtype="float32", progress=False,
                                   log=lambda _: None)
    assert out is None and len(corrupt) == 1 and "b_nan.npy" in corrupt[0]


def test_imported_and_extracted_boxes_get_the_same_geometry(tmp_path):
    """One formula for both: boxes given to extract --boxes and the same boxes in an imported release."""
    from PIL import Image

    from visualbert.extract import extract

    w, h = 48, 32
    boxes = [[0, 0, 24, 16], [4, 8, 47, 31], [-5, 2, 60, 40], [10, 10, 11, 12]]
    os.makedirs(tmp_path / "images")
    Image.new("RGB", (w, h), (90, 120, 30)).save(tmp_path / "images" / "img.png")
    (tmp_path / "boxes.json").write_text(json.dumps({"img": boxes}))
    extracted, _ = extract(str(tmp_path / "images"), str(tmp_path / "extracted"), backbone="patches",
                           boxes=str(tmp_path / "boxes.json"), image_size=16, patch_size=2, num_workers=0,
                           progress=False)
    src = tmp_path / "release.tsv"
    src.write_text(butd_line("img", np.ones((4, 8), np.float32), np.array(boxes, np.float32), w, h))
    imported, _ = import_features("butd_tsv", [str(src)], str(tmp_path / "imported"), progress=False)
    geometry = PackedStore(extracted).extra("boxes", "img")
    np.testing.assert_array_equal(PackedStore(imported).extra("boxes", "img"), geometry)
    np.testing.assert_allclose(geometry[2], [0, 2 / h, 1, 1, 1, 1 - 2 / h], rtol=1e-6)  # clipped to the image


def test_cli_corrupt_input_exits_nonzero_then_imports(tmp_path):
    images = butd_images(dim=8)
    src = tmp_path / "f.tsv"
    src.write_text(butd_line("1", *images["42"]) + "1\t2\n")
    out = str(tmp_path / "feats")
    proc = run_script(["-m", "visualbert.features", "import", "--format", "butd_tsv", "--src", str(src),
                       "--output_dir", out], check=False)
    assert proc.returncode == 1 and not os.path.exists(out) and "Traceback" not in proc.stderr
    assert f"corrupt: {src}:2: 2 tab-separated fields" in proc.stderr
    assert "error: 1 corrupt images (named above); nothing was published" in proc.stderr
    src.write_text(butd_line("1", *images["42"]))
    proc = run_script(["-m", "visualbert.features", "import", "--format", "butd_tsv", "--src", str(src),
                       "--output_dir", out])
    assert "imported 1 images, 36 rows x 8 (float16)" in proc.stdout


@pytest.mark.slow
def test_imported_store_feeds_nlvr2_and_pretraining_through_features(demo_dir, tiny_config, tmp_path):
    nlvr = demo_dir / "X_NLVR"
    splits = [str(nlvr / "data" / "detectron_fix_144" / s / "feature_1024dim") for s in ("train", "dev")]
    out, corrupt = import_features("npz_dir", splits, str(tmp_path / "feats"), progress=False)
    assert corrupt == [] and "train-0-0-img0.png" in PackedStore(out).keys()
    fast = ["--device", "cpu", "--num_workers", "0", "--seed", "1", "--max_steps", "2", "--logging_steps", "1"]
    # no --input_dir: features from the store, annotations from --annotation_dir
    run_script(["NLVR2/run_nlvr2.py", "--features", out, "--annotation_dir", str(nlvr / "annotations"),
                "--model_name_or_path", tiny_config(0.0), "--output_dir", str(tmp_path / "nlvr2"), "--batch_size", "8",
                "--eval_split", "dev", *fast])
    assert os.path.isfile(tmp_path / "nlvr2" / "best" / "eval_results.json")
    run_script(["run_pretrain.py", "--dataset", "nlvr2", "--features", out, "--annotation_dir", str(nlvr / "annotations"),
                "--model_name_or_path", tiny_config(0.0), "--output_dir", str(tmp_path / "pre"), "--train_batch_size", "8",
                "--max_eval_samples", "16", *fast])
    assert os.path.isfile(tmp_path / "pre" / "model" / "model_state.pdparams")
    proc = run_script(["NLVR2/run_nlvr2.py", "--annotation_dir", str(nlvr / "annotations"), "--model_name_or_path",
                       tiny_config(0.0), "--output_dir", str(tmp_path / "x"), *fast], check=False)
    assert proc.returncode != 0 and "--input_dir (the data root with the features) is needed unless --features" in proc.stderr


def test_npz_dir_follows_linked_folders_and_names_a_loop(tmp_path, capsys):
    x = np.ones((2, 4), np.float32)
    elsewhere = tmp_path / "elsewhere"
    os.makedirs(elsewhere)
    np.save(elsewhere / "img1.npy", x)
    src = tmp_path / "src"
    os.makedirs(src)
    np.save(src / "img0.npy", x)
    os.symlink(elsewhere, src / "linked")
    os.symlink(src, src / "loop")
    out, corrupt = import_features("npz_dir", [str(src)], str(tmp_path / "s"), dtype="float32", progress=False)
    assert corrupt == [] and sorted(PackedStore(out).keys()) == ["img0", "linked/img1"]
    assert f"note: {src / 'loop'}: left out, a link back to {src}, which holds it (a loop)" in capsys.readouterr().err
