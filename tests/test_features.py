import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from visualbert import features as F
from visualbert.features.__main__ import main as features_main
from visualbert.formats.nlvr2 import nlvr2_image_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)
    return array


def coco100(root, split, image_id, rows, dim=8, seed=0):
    arr = np.random.default_rng([seed, image_id]).standard_normal((rows, dim)).astype(np.float32)
    key = f"COCO_{split}_{image_id:012d}"
    write(os.path.join(root, "data", "detectron_fix_100", "fc6", "vqa", split, key + ".npy"), arr)
    return key, arr


def make_coco100(root, n=6, dim=8):
    out = {}
    for i in range(n):
        split = "train2014" if i % 2 else "val2014"
        key, arr = coco100(root, split, i + 1, rows=1 + 7 * i, dim=dim)
        out[key] = arr
    return out


def test_each_layout_maps_keys_to_the_seed_paths_and_reads_any_row_count(tmp_path):
    root = str(tmp_path)
    k100, a100 = coco100(root, "test2015", 42, rows=1)
    a144 = write(tmp_path / "data/detectron_fix_144/nlvr2/val/feature_1024dim/COCO_val2014_000000000007.npy",
                 np.arange(150 * 4, dtype=np.float32).reshape(150, 4))
    left = write(tmp_path / "data/detectron_fix_144/dev/feature_1024dim/dev-850-0-img0.png.npy", np.ones((3, 4), np.float16))
    write(tmp_path / "data/detectron_fix_144/dev/feature_1024dim/dev-850-0-img1.png.npy", np.zeros((2, 4), np.float32))

    s100 = F.open_features("coco_detectron_fix_100", root)
    assert s100.path(k100) == os.path.join(root, "data/detectron_fix_100/fc6/vqa/test2015", k100 + ".npy")
    np.testing.assert_array_equal(s100.get(k100), a100)
    assert s100.get(k100).shape == (1, 8) and s100.dim == 8

    s144 = F.open_features("coco_detectron_fix_144", root)
    key = F.coco_image_key(7, "val")
    assert key == "COCO_val2014_000000000007"
    np.testing.assert_array_equal(s144.get(key), a144)
    capped = F.open_features("coco_detectron_fix_144", root, max_regions=144)
    assert capped.get(key).shape == (144, 4)
    np.testing.assert_array_equal(capped.get(key), a144[:144])

    snl = F.open_features("nlvr2_detectron_fix_144", root)
    lk, rk = nlvr2_image_names("dev-850-0-0")
    assert (lk, rk) == ("dev-850-0-img0.png", "dev-850-0-img1.png")
    got = snl.get(lk)
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_array_equal(got, left.astype(np.float32))
    assert sorted(snl.keys()) == [lk, rk]
    assert snl.path("test1-3-1-img0.png").endswith(os.path.join("detectron_fix_144", "test1", "feature_1024dim", "test1-3-1-img0.png.npy"))


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("float32", 0.0)])
def test_packed_store_returns_the_per_image_rows_and_is_found_by_readers(tmp_path, dtype, tol):
    root = str(tmp_path)
    arrays = make_coco100(root)
    per_image = F.open_features("coco_detectron_fix_100", root)
    assert per_image.packed == []
    out = F.pack_features("coco_detectron_fix_100", root, dtype=dtype, progress=False)
    assert out == F.default_pack_dir("coco_detectron_fix_100", root)
    store = F.open_features("coco_detectron_fix_100", root)
    assert len(store.packed) == 1 and store.packed[0].dtype == np.dtype(dtype)
    assert os.path.getsize(os.path.join(out, "features.bin")) == sum(a.size for a in arrays.values()) * np.dtype(dtype).itemsize
    for key, arr in arrays.items():
        os.remove(per_image.path(key))  # proves the rows come from the packed store
        got = store.get(key)
        assert got.dtype == np.float32 and got.shape == arr.shape
        np.testing.assert_allclose(got, arr, rtol=tol, atol=tol)
        if dtype == "float16":
            np.testing.assert_array_equal(got, arr.astype(np.float16).astype(np.float32))
    assert sorted(store.keys()) == sorted(arrays)
    assert F.open_features("coco_detectron_fix_100", root, max_regions=2).get("COCO_train2014_000000000002").shape == (2, 8)


def test_packed_store_pickles_without_its_memory_map(tmp_path):
    import pickle

    root = str(tmp_path)
    arrays = make_coco100(root, n=3)
    F.pack_features("coco_detectron_fix_100", root, progress=False)
    store = F.open_features("coco_detectron_fix_100", root)
    key = next(iter(arrays))
    store.get(key)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.packed[0]._mmap is None
    np.testing.assert_array_equal(clone.get(key), store.get(key))


def test_pack_of_one_split_holds_only_that_split(tmp_path):
    root = str(tmp_path)
    make_coco100(root)
    out = F.pack_features("coco_detectron_fix_100", root, split="val2014", progress=False)
    assert out.endswith(os.path.join("packed", "val2014"))
    packed = F.PackedStore(out)
    assert packed.keys() and all(k.startswith("COCO_val2014_") for k in packed.keys())
    store = F.open_features("coco_detectron_fix_100", root)
    assert store.get("COCO_train2014_000000000002").shape == (8, 8)  # falls back to the per-image file


class Crash(Exception):
    pass


def test_crash_during_pack_leaves_no_complete_store_and_a_rerun_resumes(tmp_path):
    root = str(tmp_path)
    arrays = make_coco100(root, n=8)
    out = str(tmp_path / "store")
    calls = []

    def crashing_reader(path, key=None):
        calls.append(key)
        if len(calls) == 5:
            raise Crash()
        return F.read_feature_file(path, key)

    with pytest.raises(Crash):
        F.pack_features("coco_detectron_fix_100", root, out=out, progress=False, _reader=crashing_reader)
    assert not os.path.exists(out)
    assert os.path.isdir(out + ".partial") and not os.path.exists(os.path.join(out + ".partial", "meta.json"))
    with pytest.raises(FileNotFoundError, match="not a complete packed feature store"):
        F.PackedStore(out + ".partial")
    # Simulate a kill between writing rows and recording them: garbage past the last recorded image.
    with open(os.path.join(out + ".partial", "features.bin"), "ab") as f:
        f.write(b"\x01" * 10)

    resumed = []

    def counting_reader(path, key=None):
        resumed.append(key)
        return F.read_feature_file(path, key)

    F.pack_features("coco_detectron_fix_100", root, out=out, progress=False, _reader=counting_reader)
    assert len(resumed) == 8 - 4  # the four images finished before the crash are not read again
    store = F.open_features("coco_detectron_fix_100", root, packed_dirs=[out])
    for key, arr in arrays.items():
        np.testing.assert_array_equal(store.get(key), arr.astype(np.float16).astype(np.float32))
    assert not os.path.exists(out + ".partial")
    assert not os.path.exists(os.path.join(out, "progress.jsonl"))


def test_sigkill_during_pack_leaves_no_store_readers_would_use(tmp_path):
    root = str(tmp_path)
    make_coco100(root, n=40, dim=4)
    code = (
        "import sys, time; from visualbert import features as F\n"
        "def slow(path, key=None):\n"
        "    time.sleep(0.05); return F.read_feature_file(path, key)\n"
        f"F.pack_features('coco_detectron_fix_100', {root!r}, progress=False, _reader=slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    progress = os.path.join(F.default_pack_dir("coco_detectron_fix_100", root) + ".partial", "progress.jsonl")
    deadline = time.time() + 30
    while time.time() < deadline and not (os.path.exists(progress) and os.path.getsize(progress) > 0):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert F.open_features("coco_detectron_fix_100", root).packed == []
    assert not os.path.exists(F.default_pack_dir("coco_detectron_fix_100", root))


def test_pack_refuses_to_overwrite_and_the_cli_packs(tmp_path, capsys):
    root = str(tmp_path)
    make_coco100(root, n=2)
    assert features_main(["pack", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", root, "--dtype", "float32"]) == 0
    assert "packed 2 images, 9 rows x 8 (float32)" in capsys.readouterr().out
    assert features_main(["pack", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", root]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already exists" in err and "\n" not in err


def test_inspect_reports_counts_rows_dims_and_missing_ids(tmp_path, capsys):
    root = str(tmp_path)
    make_coco100(root, n=4)
    report = F.inspect_features("coco_detectron_fix_100", root, expected_keys=["COCO_val2014_000000000001", "COCO_val2014_000000000099"],
                                progress=False)
    assert report["images"] == 4 and report["dims"] == {"8": 4}
    assert (report["rows_min"], report["rows_mean"], report["rows_max"]) == (1, 11.5, 22)
    assert report["missing"] == ["COCO_val2014_000000000099"]
    F.pack_features("coco_detectron_fix_100", root, split="train2014", progress=False)
    report = F.inspect_features("coco_detectron_fix_100", root, progress=False)
    assert report["images"] == 4 and report["images_packed"] == 2 and report["dims"] == {"8": 4}
    assert features_main(["inspect", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4


def test_inspect_cli_missing_ids_for_a_dataset_exit_nonzero(tmp_path, capsys):
    root = tmp_path
    write(root / "data/detectron_fix_144/dev/feature_1024dim/dev-1-0-img0.png.npy", np.ones((2, 4), np.float32))
    write(root / "data/detectron_fix_144/dev/feature_1024dim/dev-1-0-img1.png.npy", np.ones((2, 4), np.float32))
    (root / "annotations").mkdir()
    (root / "annotations/dev.json").write_text(
        '{"identifier": "dev-1-0-0", "sentence": "a", "label": "True"}\n{"identifier": "dev-2-1-0", "sentence": "b", "label": "False"}\n')
    rc = features_main(["inspect", "--image_feature_type", "nlvr2_detectron_fix_144", "--input_dir", str(root),
                 "--dataset", "nlvr2", "--dataset_splits", "dev"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "missing: 2 of 4" in out and "dev-2-1-img0.png" in out and "dev-2-1-img1.png" in out


# ---- bad input: one clear line naming the file / id / field ----

def test_missing_feature_file_names_the_path_and_id(tmp_path):
    make_coco100(str(tmp_path), n=1)
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        store.get("COCO_train2014_000000000777")
    msg = str(e.value)
    assert "COCO_train2014_000000000777.npy" in msg and "image 'COCO_train2014_000000000777'" in msg and "\n" not in msg


@pytest.mark.parametrize("content,match", [
    ("truncated", "truncated|unreadable"),
    ("garbage", "not a .npy file"),
    ("strings", "dtype <U"),
    ("objects", "dtype object"),
    ("zero_rows", "zero rows"),
    ("one_d", r"found shape \(5,\)"),
])
def test_bad_feature_files_raise_one_line_naming_the_file(tmp_path, content, match):
    path = str(tmp_path / "data/detectron_fix_100/fc6/vqa/train2014/COCO_train2014_000000000001.npy")
    os.makedirs(os.path.dirname(path))
    if content == "truncated":
        np.save(path, np.ones((10, 8), np.float32))
        with open(path, "r+b") as f:
            f.truncate(200)
    elif content == "garbage":
        with open(path, "wb") as f:
            f.write(b"this is not numpy")
    elif content == "strings":
        np.save(path, np.array([["a", "b"]]))
    elif content == "objects":
        arr = np.empty((1, 2), dtype=object)
        arr[0, 0], arr[0, 1] = {"x": 1}, 2
        np.save(path, arr, allow_pickle=True)
    elif content == "zero_rows":
        np.save(path, np.zeros((0, 8), np.float32))
    elif content == "one_d":
        np.save(path, np.zeros(5, np.float32))
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    with pytest.raises(ValueError, match=match) as e:
        store.get("COCO_train2014_000000000001")
    assert path in str(e.value) and "\n" not in str(e.value)


def test_truncated_file_is_reported_by_inspect_not_crashed_on(tmp_path):
    make_coco100(str(tmp_path), n=2)
    path = F.open_features("coco_detectron_fix_100", str(tmp_path)).path("COCO_val2014_000000000001")
    np.save(path, np.ones((10, 8), np.float32))
    with open(path, "r+b") as f:
        f.truncate(150)
    report = F.inspect_features("coco_detectron_fix_100", str(tmp_path), progress=False)
    assert report["images"] == 1 and len(report["bad_files"]) == 1 and "truncated" in report["bad_files"][0]


def test_inspect_refuses_from_the_header_what_reading_refuses(tmp_path):
    """inspect reads only .npy headers, yet reports every file that reading it would refuse for its shape or dtype."""
    make_coco100(str(tmp_path), n=4)
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    zero_columns, strings = store.path("COCO_val2014_000000000001"), store.path("COCO_val2014_000000000003")
    np.save(zero_columns, np.ones((3, 0), np.float32))
    np.save(strings, np.array([["a", "b"]]))
    report = F.inspect_features("coco_detectron_fix_100", str(tmp_path), progress=False)
    assert report["images"] == 2 and sorted(report["bad_files"]) == sorted([
        f"{zero_columns}: feature array has zero columns",
        f"{strings}: expected a numeric [N, D] feature array, found dtype <U1"])
    for path in (zero_columns, strings):  # the same line as reading the file says
        with pytest.raises(ValueError) as e:
            F.read_feature_file(path)
        assert str(e.value) in report["bad_files"]


def test_feature_dim_mismatch_is_caught_up_front_and_per_file(tmp_path):
    make_coco100(str(tmp_path), n=2, dim=8)
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    F.check_feature_dim(store, 8)
    with pytest.raises(ValueError, match="features have dim 8, but the model's visual_embedding_dim is 2048"):
        F.check_feature_dim(store, 2048)
    coco100(str(tmp_path), "train2014", 50, rows=2, dim=16)
    with pytest.raises(ValueError, match=r"COCO_train2014_000000000050.npy: feature dim 16, but .*\.npy has 8 \(the "
                                         r"dimension the run took for coco_detectron_fix_100\)"):
        store.get("COCO_train2014_000000000050")
    with pytest.raises(ValueError, match="feature dim 16, the images before it have 8"):
        F.pack_features("coco_detectron_fix_100", str(tmp_path), progress=False)


def test_unknown_feature_type_split_and_key(tmp_path):
    with pytest.raises(ValueError, match="unknown --image_feature_type 'coco_fix_100'.*coco_detectron_fix_100"):
        F.open_features("coco_fix_100", str(tmp_path))
    with pytest.raises(ValueError, match="unknown split 'dev' for coco_detectron_fix_100 .*train2014, val2014, test2015"):
        F.open_features("coco_detectron_fix_100", str(tmp_path), split="dev")
    store = F.open_features("coco_detectron_fix_144", str(tmp_path))
    with pytest.raises(ValueError, match="split 'test'"):
        store.get("COCO_test2015_000000000001")
    with pytest.raises(ValueError, match="not of the form"):
        store.get("dev-1-0-img0.png")
    with pytest.raises(FileNotFoundError, match="no feature files found"):
        store.dim


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "visualbert.features", "pack", "--image_feature_type", "nope",
                           "--input_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: unknown --image_feature_type 'nope' (expected one of: coco_detectron_fix_100, " \
                                  "coco_detectron_fix_144, nlvr2_detectron_fix_144)"
    proc = subprocess.run([sys.executable, "-m", "visualbert.features", "pack", "--image_feature_type", "coco_detectron_fix_100",
                           "--input_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "no per-image .npy feature files" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "visualbert.features", "inspect", "--image_feature_type",
                           "coco_detectron_fix_100", "--input_dir", str(tmp_path / "nowhere")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: --input_dir {tmp_path / 'nowhere'}: no such directory"
    help_text = subprocess.run([sys.executable, "-m", "visualbert.features", "pack", "--help"], cwd=REPO,
                               capture_output=True, text=True).stdout
    assert "--image_feature_type" in help_text and "--out" in help_text and "--dtype" in help_text
