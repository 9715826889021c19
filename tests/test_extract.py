"""python -m visualbert.extract: own images -> a packed store the loaders read (tiny images, --weights none)."""
import json
import os
import pickle

import numpy as np
import pytest
from conftest import run_script
from PIL import Image

from visualbert import extract as E
from visualbert.features import PackedStore, open_feature_dir


def draw(path, size=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def normalised(pixels):
    return ((pixels.astype(np.float32) / 255.0 - E.IMAGENET_MEAN) / E.IMAGENET_STD)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    made = {"a": draw(str(root / "a.png"), seed=1), "sub/b": draw(str(root / "sub" / "b.png"), seed=2),
            "sub/deeper/c": draw(str(root / "sub" / "deeper" / "c.png"), seed=3)}
    # a JPEG is lossy: only its presence and shape are checked
    Image.fromarray(made["a"]).save(str(root / "d.JPG"))
    (root / "notes.txt").write_text("not an image")
    return str(root), made


def test_patches_are_the_normalised_pixels_cell_by_cell_with_their_geometry(images, tmp_path):
    root, made = images
    out, skipped = E.extract(root, str(tmp_path / "feats"), backbone="patches", image_size=32, patch_size=8,
                             num_workers=0, progress=False)
    assert skipped == []
    store = PackedStore(out)
    assert sorted(store.keys()) == ["a", "d", "sub/b", "sub/deeper/c"]
    assert store.dim == 8 * 8 * 3 and store.rows("a") == 16
    for key, pixels in made.items():
        want = normalised(pixels).reshape(4, 8, 4, 8, 3).transpose(0, 2, 1, 3, 4).reshape(16, 192)
        np.testing.assert_allclose(store.get(key), want, atol=2e-3 * np.abs(want).max())
    geometry = store.extra("boxes", "a")
    np.testing.assert_allclose(geometry[5], [0.25, 0.25, 0.5, 0.5, 0.25, 0.25])  # row 1, column 1
    # what the training scripts open with --features; a dataset key may keep the image's extension
    feats = open_feature_dir(out, max_regions=3)
    assert feats.get("sub/b").shape == (3, 192)
    assert "sub/b.png" in feats and "sub/b.txt" not in feats
    np.testing.assert_array_equal(feats.get("sub/b.png"), feats.get("sub/b"))


def test_patch_grid_resamples_cells(images, tmp_path):
    root, made = images
    out, _ = E.extract(root, str(tmp_path / "feats"), backbone="patches", grid=2, image_size=32, patch_size=2,
                       num_workers=0, progress=False)
    store = PackedStore(out)
    assert store.rows("a") == 4 and store.dim == 2 * 2 * 3
    # cell (0, 0) is the top-left 16 x 16 pixels average-pooled to 2 x 2
    want = normalised(made["a"])[:16, :16].reshape(2, 8, 2, 8, 3).mean((1, 3)).reshape(-1)
    np.testing.assert_allclose(store.get("a")[0], want, atol=2e-3)


def test_boxes_are_roi_aligned_and_their_geometry_is_normalised(images, tmp_path):
    root, made = images
    keys = ["a", "d", "sub/b", "sub/deeper/c"]
    boxes = {k: [[0, 0, 8, 8], [8, 16, 32, 32]] for k in keys}
    boxes["a"].append([24, 0, 32, 8])
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(boxes))
    out, _ = E.extract(root, str(tmp_path / "feats"), backbone="patches", boxes=str(path), image_size=32,
                       patch_size=8, num_workers=0, progress=False)
    store = PackedStore(out)
    assert store.rows("a") == 3 and store.rows("sub/b") == 2
    grid, _ = E.extract(root, str(tmp_path / "grid"), backbone="patches", image_size=32, patch_size=8,
                        num_workers=0, progress=False)
    grid = PackedStore(grid)
    # a box on exactly one patch gives that patch
    np.testing.assert_allclose(store.get("a")[0], grid.get("a")[0], atol=1e-2)
    np.testing.assert_allclose(store.get("a")[2], grid.get("a")[3], atol=1e-2)
    np.testing.assert_allclose(store.extra("boxes", "a"), [[0, 0, 0.25, 0.25, 0.25, 0.25], [0.25, 0.5, 1, 1, 0.75, 0.5],
                                                           [0.75, 0, 1, 0.25, 0.25, 0.25]])


def test_boxes_file_must_cover_every_image_and_be_well_formed(images, tmp_path):
    root, _ = images
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a": [[0, 0, 8, 8]]}))
    with pytest.raises(ValueError, match=r"boxes.json: no boxes for image 'd' \(3 of 4"):
        E.extract(root, str(tmp_path / "feats"), backbone="patches", boxes=str(path), progress=False)
    path.write_text(json.dumps({"a": [[8, 0, 4, 8]]}))
    with pytest.raises(ValueError, match="boxes.json: boxes of 'a': box 0 is not x1 < x2"):
        E.extract(root, str(tmp_path / "feats"), backbone="patches", boxes=str(path), progress=False)
    assert not os.path.exists(tmp_path / "feats")


@pytest.mark.slow
def test_resnet50_grid_and_boxes_with_random_or_file_weights(images, tmp_path):
    import paddle

    root, _ = images
    out, _ = E.extract(root, str(tmp_path / "grid"), backbone="resnet50", weights="none", grid=2, image_size=64,
                       batch_size=3, num_workers=1, progress=False)
    store = PackedStore(out)
    assert store.dim == 2048 and store.rows("sub/b") == 4
    feats = store.get("sub/b")
    assert np.isfinite(feats).all() and feats.std() > 0
    assert not np.allclose(store.get("a"), feats)

    # the same network saved as a .pdparams file gives the same features
    net = E.Backbone("resnet50", "none", 8).net
    weights = tmp_path / "r50.pdparams"
    paddle.save(net.state_dict(), str(weights))
    again, _ = E.extract(root, str(tmp_path / "file"), backbone="resnet50", weights=str(weights), grid=2,
                         image_size=64, num_workers=0, progress=False)
    np.testing.assert_allclose(PackedStore(again).get("sub/b"), feats, rtol=1e-2, atol=1e-3)

    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({k: [[0, 0, 16, 16], [4, 4, 30, 20], [0, 0, 32, 32]] for k in store.keys()}))
    boxed, _ = E.extract(root, str(tmp_path / "boxes"), backbone="resnet50", weights="none", boxes=str(path),
                         image_size=64, num_workers=0, progress=False)
    boxed = PackedStore(boxed)
    assert boxed.dim == 2048 and boxed.rows("a") == 3
    # the whole-image box averages the whole map, which the 1 x 1 grid is too
    whole, _ = E.extract(root, str(tmp_path / "whole"), backbone="resnet50", weights="none", grid=1, image_size=64,
                         num_workers=0, progress=False)
    np.testing.assert_allclose(boxed.get("a")[2], PackedStore(whole).get("a")[0], rtol=0.1, atol=0.05)


def test_weights_file_of_another_network_is_one_clear_error(images, tmp_path):
    import paddle

    weights = tmp_path / "other.pdparams"
    paddle.save({"conv.weight": np.zeros((2, 2), np.float32)}, str(weights))
    with pytest.raises(ValueError, match="other.pdparams: not resnet50 weights"):
        E.extract(images[0], str(tmp_path / "feats"), backbone="resnet50", weights=str(weights), progress=False)
    with pytest.raises(ValueError, match="patches takes no --weights"):
        E.extract(images[0], str(tmp_path / "feats"), backbone="patches", weights="imagenet", progress=False)


def test_pixel_boxes_are_checked_alike_for_a_boxes_file_and_a_pipeline():
    """check_pixel_boxes serves extract --boxes and the prediction pipelines' boxes: the same rule, the box named."""
    from visualbert.geometry import check_pixel_boxes

    np.testing.assert_array_equal(check_pixel_boxes([[1, 2, 3, 4]], what="boxes"), np.array([[1, 2, 3, 4]], np.float32))
    with pytest.raises(ValueError, match=r"^boxes must be a non-empty list of \[x1, y1, x2, y2\] in image pixels$"):
        check_pixel_boxes([], what="boxes")
    with pytest.raises(ValueError, match=r"^boxes: box 1 is not x1 < x2, y1 < y2: \[0.0, 5.0, 4.0, nan\]$"):
        check_pixel_boxes([[0, 0, 4, 4], [0, 5, 4, float("nan")]], what="boxes")


def test_weights_file_is_read_like_every_pdparams_file(images, tmp_path):
    """--weights goes through safeload.load_paddle: a hostile pickle is refused by name, a cut one named as such."""
    from conftest import plant_payload

    from visualbert.safeload import UnsafePickleError

    def extract_with(weights):
        E.extract(images[0], str(tmp_path / "feats"), backbone="resnet50", weights=str(weights), progress=False)

    evil = tmp_path / "evil.pdparams"
    plant_payload(evil, str(tmp_path / "ran"))
    with pytest.raises(UnsafePickleError, match="evil.pdparams: refusing to load 'posix.system'"):
        extract_with(evil)
    assert not (tmp_path / "ran").exists()
    cut = tmp_path / "cut.pdparams"
    cut.write_bytes(evil.read_bytes()[:20])
    with pytest.raises(ValueError, match="cut.pdparams: truncated or corrupt Paddle file"):
        extract_with(cut)
    listed = tmp_path / "list.pdparams"
    listed.write_bytes(pickle.dumps([np.zeros(2)]))
    with pytest.raises(ValueError, match="list.pdparams: expected a .pdparams state dict, found list"):
        extract_with(listed)
    with pytest.raises(FileNotFoundError, match="missing.pdparams: --weights file not found"):
        extract_with(tmp_path / "missing.pdparams")


class Crash(Exception):
    pass


def test_a_run_killed_midway_publishes_nothing_and_a_rerun_resumes(images, tmp_path, monkeypatch):
    root, _ = images
    out = str(tmp_path / "feats")
    seen = []
    original = E.Backbone.grid

    def crashing(self, fmap, n):
        seen.append(fmap.shape[0])
        if len(seen) == 2:
            raise Crash()
        return original(self, fmap, n)

    monkeypatch.setattr(E.Backbone, "grid", crashing)
    with pytest.raises(Crash):
        E.extract(root, out, backbone="patches", image_size=32, batch_size=1, num_workers=0, progress=False)
    assert not os.path.exists(out) and os.path.isdir(out + ".partial")
    seen.clear()
    monkeypatch.setattr(E.Backbone, "grid", lambda self, fmap, n: (seen.append(fmap.shape[0]), original(self, fmap, n))[1])
    E.extract(root, out, backbone="patches", image_size=32, batch_size=1, num_workers=0, progress=False)
    assert len(seen) == 3  # the image finished before the crash is not extracted again
    fresh, _ = E.extract(root, str(tmp_path / "fresh"), backbone="patches", image_size=32, num_workers=0, progress=False)
    for key in PackedStore(fresh).keys():
        np.testing.assert_array_equal(PackedStore(out).get(key), PackedStore(fresh).get(key))
    assert not os.path.exists(out + ".partial")


@pytest.mark.slow
def test_corrupt_images_stop_the_run_unless_skipped(images, tmp_path):
    root, _ = images
    (tmp_path / "images" / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    good = tmp_path / "images" / "zz.png"
    draw(str(good), seed=9)
    (tmp_path / "images" / "truncated.png").write_bytes(good.read_bytes()[:200])
    out = str(tmp_path / "feats")
    proc = run_script(["-m", "visualbert.extract", "--image_dir", root, "--output_dir", out, "--backbone", "patches",
                       "--image_size", "32", "--num_workers", "2"], check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sub/broken.png: cannot read image" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not os.path.exists(out)

    proc = run_script(["-m", "visualbert.extract", "--image_dir", root, "--output_dir", out, "--backbone", "patches",
                       "--image_size", "32", "--num_workers", "2", "--skip_bad_images"])
    assert "skipped 2 unreadable" in proc.stdout
    assert sorted(PackedStore(out).keys()) == ["a", "d", "sub/b", "sub/deeper/c", "zz"]
    listed = (tmp_path / "feats" / E.SKIPPED_FILE).read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == [os.path.join(root, "sub", "broken.png"),
                                                         os.path.join(root, "truncated.png")]


def test_two_files_with_one_key_and_an_empty_folder_are_refused(tmp_path):
    draw(str(tmp_path / "x" / "a.png"))
    draw(str(tmp_path / "x" / "a.jpg"))
    with pytest.raises(ValueError, match="same key 'a'"):
        E.list_images(str(tmp_path / "x"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no jpg/jpeg/png images"):
        E.list_images(str(tmp_path / "empty"))


def test_sigkill_midway_then_the_same_command_resumes(images, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    root, _ = images
    out = str(tmp_path / "feats")
    code = (
        "import time; from visualbert import extract as E\n"
        "grid = E.Backbone.grid\n"
        "E.Backbone.grid = lambda self, fmap, n: (time.sleep(1.0), grid(self, fmap, n))[1]\n"
        f"E.extract({root!r}, {out!r}, backbone='patches', image_size=32, batch_size=1, num_workers=0, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    progress = os.path.join(out + ".partial", "progress.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(progress) and os.path.getsize(progress) > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not os.path.exists(out)
    done = len(open(progress).read().splitlines())
    assert 1 <= done < 4
    lines = []
    E.extract(root, out, backbone="patches", image_size=32, batch_size=1, num_workers=0, progress=False, log=lines.append)
    assert lines == [f"resuming: {done} of 4 images already extracted"]
    fresh, _ = E.extract(root, str(tmp_path / "fresh"), backbone="patches", image_size=32, num_workers=0, progress=False)
    assert sorted(PackedStore(out).keys()) == sorted(PackedStore(fresh).keys())
    for key in PackedStore(fresh).keys():
        np.testing.assert_array_equal(PackedStore(out).get(key), PackedStore(fresh).get(key))


def test_linked_folders_are_followed_and_a_loop_is_named_and_left_out(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    draw(str(elsewhere / "cats" / "c1.png"), seed=4)
    root = tmp_path / "images"
    draw(str(root / "a.png"), seed=5)
    os.symlink(elsewhere / "cats", root / "cats")  # a folder linked in, not copied
    os.symlink(root, root / "again")  # a link back to a folder the walk is inside
    out, _ = E.extract(str(root), str(tmp_path / "feats"), backbone="patches", image_size=16, patch_size=8,
                       num_workers=0, progress=False)
    assert sorted(PackedStore(out).keys()) == ["a", "cats/c1"]
    assert f"note: {root / 'again'}: left out, a link back to {root}, which holds it (a loop)" in capsys.readouterr().err


def png_claiming(path, width, height):
    """A 1 x 1 PNG whose header claims ``width`` x ``height`` pixels (as a decompression bomb's does, in a few bytes)."""
    import struct
    import zlib

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(open(path, "rb").read())
    ihdr = data[12:29]  # chunk type (4) + data (13): width, height, depth, colour, ...
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    open(path, "wb").write(bytes(data))


def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, capsys):
    draw(str(tmp_path / "images" / "a.png"))
    png_claiming(str(tmp_path / "images" / "bomb.png"), 12000, 12000)
    out = str(tmp_path / "feats")
    assert E.main(["--image_dir", str(tmp_path / "images"), "--output_dir", out, "--backbone", "patches",
                   "--image_size", "16", "--num_workers", "0"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'images' / 'bomb.png'}: cannot read image (12000 x "
                                               "12000 pixels, more than the 89,478,485 this reads"), err
    assert not os.path.exists(out)


def test_imagenet_weights_without_network_is_one_line_naming_the_offline_choices(images, tmp_path, monkeypatch, capsys):
    import paddle.vision.models.resnet as resnet

    def no_network(*a, **kw):
        raise ConnectionError("Failed to establish a new connection:\n[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(resnet, "get_weights_path_from_url", no_network)
    root, _ = images
    out = str(tmp_path / "feats")
    assert E.main(["--image_dir", root, "--output_dir", out, "--backbone", "resnet50", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: --weights imagenet: downloading Paddle's ImageNet resnet50 weights failed "
                             "(ConnectionError: Failed to establish a new connection: [Errno -3]")
    for choice in ("--weights FILE.pdparams", "--weights none", "--backbone patches"):
        assert choice in err[0]
    assert not os.path.exists(out)
