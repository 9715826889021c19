"""Faults that used to do harm quietly: pickles by another door, tensors past their storage, packed
stores whose index lies, outputs that are inputs, and writers that race or run out of disk."""
import argparse
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import KEYS, one_line, plant_payload, run_script, write_npy_features
from visualbert import environment, errors, features as F, pretrained
from visualbert.modeling import VisualBertConfig, VisualBertForVisualReasoning
from visualbert.torch_format import load_torch_file


# ---------------------------------------------------------------------------- weights by another door


@pytest.fixture
def model_dir(tmp_path, tiny_config):
    with open(tiny_config()) as f:
        directory = tmp_path / "model"
        VisualBertForVisualReasoning(VisualBertConfig(**json.load(f))).save_pretrained(str(directory))
    return directory


def load_refusal(path):
    with pytest.raises(SystemExit) as e, errors.user_errors():
        pretrained.load_model(VisualBertForVisualReasoning, str(path))
    message = one_line(e)
    assert message.startswith("error: ")
    return message


def test_stray_safetensors_does_not_open_a_door_to_the_pickle(model_dir, tmp_path):
    marker = tmp_path / "pwned"
    plant_payload(model_dir / "model_state.pdparams", marker)
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(model_dir / "stray.safetensors"))
    assert "model_state.pdparams: refusing to load 'posix.system'" in load_refusal(model_dir)
    assert not marker.exists()


@pytest.mark.parametrize("index_name, shard_name", [
    ("model_state.pdparams.index.json", "model_state-00001-of-00001.pdparams"),
    ("model.safetensors.index.json", "model-00001-of-00001.pdparams"),
])
def test_sharded_checkpoints_are_refused_before_any_shard_is_read(model_dir, tmp_path, index_name, shard_name):
    marker = tmp_path / "pwned"
    os.remove(model_dir / "model_state.pdparams")
    plant_payload(model_dir / shard_name, marker)
    with open(model_dir / index_name, "w") as f:
        json.dump({"metadata": {}, "weight_map": {"cls.weight": shard_name}}, f)
    message = load_refusal(model_dir)
    assert f"{index_name}: sharded checkpoints are not read" in message
    assert not marker.exists()


def test_safetensors_weights_are_read_without_paddlenlp(model_dir):
    """model.safetensors is read here (no pickle) and preferred over model_state.pdparams, as PaddleNLP would."""
    reference = VisualBertForVisualReasoning.from_pretrained(str(model_dir))
    state = {k: v.numpy() * 0 + 0.5 for k, v in reference.state_dict().items()}
    save_file(state, str(model_dir / "model.safetensors"))
    loaded = pretrained.load_model(VisualBertForVisualReasoning, str(model_dir))
    for value in loaded.state_dict().values():
        np.testing.assert_array_equal(value.numpy(), 0.5)


class _TorchNames:
    """While pickling: a stand-in ``torch._utils._rebuild_tensor_v2``, so the pickle names it as torch.save does."""

    def __enter__(self):
        import sys
        import types

        self.saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
        utils = types.ModuleType("torch._utils")
        utils._rebuild_tensor_v2 = _rebuild
        sys.modules["torch"], sys.modules["torch._utils"] = types.ModuleType("torch"), utils

    def __exit__(self, *exc):
        import sys

        for name, module in self.saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _rebuild(*args):
    """What the pickles written here name as torch's tensor rebuild function."""


_rebuild.__module__ = "torch._utils"
_rebuild.__qualname__ = _rebuild.__name__ = "_rebuild_tensor_v2"


def _zip_checkpoint(path, numel, size, stride, offset=0):
    class Storage:  # pickled as a persistent id, as torch.save writes a storage
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", "FloatStorage", "0", "cpu", numel)
            return None

    class Rebuild:
        def __reduce__(self):
            return _rebuild, (Storage(), offset, size, stride)

    import io
    buffer = io.BytesIO()
    with _TorchNames():
        Pickler(buffer, protocol=2).dump({"bert.embeddings.weight": Rebuild()})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/data/0", np.arange(numel, dtype="<f4").tobytes())


def _legacy_checkpoint(path, numel, size, stride, offset=0):
    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", "FloatStorage", "0", "cpu", numel, None)
            return None

    class Rebuild:
        def __reduce__(self):
            return _rebuild, (Storage(), offset, size, stride)

    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            f.write(pickle.dumps(obj, protocol=2))
        with _TorchNames():
            Pickler(f, protocol=2).dump({"bert.embeddings.weight": Rebuild()})
        f.write(pickle.dumps(["0"], protocol=2))
        f.write(struct.pack("<q", numel) + np.arange(numel, dtype="<f4").tobytes())


@pytest.mark.parametrize("writer", [_zip_checkpoint, _legacy_checkpoint])
@pytest.mark.parametrize("size, stride, offset", [
    ((4, 4), (4, 1), 0),      # 16 elements claimed, 6 stored
    ((2, 3), (3, 1), 1),      # the offset pushes the last element out
    ((2, 3), (30, 1), 0),     # a stride that jumps past the end
    ((2, 3), (3, 1), -1),     # a negative offset
    ((2, 3), (-3, 1), 3),     # a negative stride
])
def test_tensor_beyond_its_storage_is_refused_naming_it(tmp_path, writer, size, stride, offset):
    path = tmp_path / "pytorch_model.bin"
    writer(path, 6, size, stride, offset)
    with pytest.raises(ValueError, match=r"pytorch_model.bin: tensor 'bert.embeddings.weight' .* does not fit its "
                                         r"storage of 6 elements"):
        load_torch_file(path)


@pytest.mark.parametrize("writer", [_zip_checkpoint, _legacy_checkpoint])
def test_tensor_inside_its_storage_still_loads(tmp_path, writer):
    path = tmp_path / "pytorch_model.bin"
    writer(path, 6, (3, 2), (1, 3), 0)  # a transposed view: the last element is storage[5]
    np.testing.assert_array_equal(load_torch_file(path)["bert.embeddings.weight"], np.arange(6).reshape(2, 3).T)


# ---------------------------------------------------------------------------- packed stores that lie


@pytest.fixture
def packed(tmp_path):
    write_npy_features(tmp_path, KEYS)
    return F.pack_features("coco_detectron_fix_100", str(tmp_path), progress=False)


def _edit_index(store_dir, **changes):
    path = os.path.join(store_dir, "index.json")
    with open(path) as f:
        index = json.load(f)
    for field, (i, value) in changes.items():
        index[field][i] = value
    with open(path, "w") as f:
        json.dump(index, f)
    return path


@pytest.mark.parametrize("field, value", [("offsets", 9), ("offsets", -3), ("rows", 7), ("rows", "3")])
def test_index_entries_outside_the_store_are_refused_at_open(packed, field, value):
    path = _edit_index(packed, **{field: (1, value)})
    with pytest.raises(ValueError) as e:
        F.PackedStore(packed)
    assert one_line(e).startswith(f"{path}: entry '{KEYS[1]}'") and "outside the store's 9 rows" in str(e.value)


def test_index_that_is_not_json_is_named(packed):
    path = os.path.join(packed, "index.json")
    with open(path, "w") as f:
        f.write('{"keys": [')
    with pytest.raises(ValueError) as e:
        F.PackedStore(packed)
    assert one_line(e).startswith(f"{path}: not valid JSON")


# ---------------------------------------------------------------------------- outputs that are inputs


def output_refusal(**flags):
    with pytest.raises(SystemExit) as e:
        environment.check_output_paths(argparse.Namespace(**flags))
    message = one_line(e)
    assert message.startswith("error: ")
    return message


def test_prediction_output_that_is_its_questions_file_is_refused(tmp_path):
    questions = tmp_path / "questions.json"
    questions.write_text('{"questions": []}')
    message = output_refusal(output=str(questions), questions=str(questions), model_name_or_path="x")
    assert message == (f"error: --output {questions} is the --questions input; writing it would destroy it; "
                       "pick another --output")
    assert questions.read_text() == '{"questions": []}'
    # through a symlink, and for the --eval_ prefixed flags, too
    os.symlink(questions, tmp_path / "link.json")
    assert "is the --eval_questions input" in output_refusal(output=str(tmp_path / "link.json"),
                                                             eval_questions=str(questions))


def test_root_and_home_are_refused_as_output_dir(tmp_path, monkeypatch):
    assert output_refusal(output_dir="/", overwrite_output_dir=False) == (
        "error: --output_dir / is the root directory; pick a directory of its own")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_refusal(output_dir=str(tmp_path) + "/", overwrite_output_dir=True) == (
        f"error: --output_dir {tmp_path}/ is your home directory; pick a directory of its own")


@pytest.mark.parametrize("model", ["run/model", "run", "run/checkpoint-3/../model"])
def test_overwrite_output_dir_that_holds_the_starting_model_is_refused(tmp_path, model):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model_state.pdparams").write_bytes(b"weights")
    (run / "checkpoint-3").mkdir()
    message = output_refusal(output_dir=str(run), overwrite_output_dir=True, model_name_or_path=str(tmp_path / model))
    assert message.startswith(f"error: --output_dir {run}: its ")
    assert "would be replaced, but --model_name_or_path" in message
    assert (run / "model" / "model_state.pdparams").read_bytes() == b"weights"
    # without --overwrite_output_dir nothing is deleted, and a model elsewhere is fine
    environment.check_output_paths(argparse.Namespace(output_dir=str(run), overwrite_output_dir=False,
                                                      model_name_or_path=str(tmp_path / model)))
    (tmp_path / "elsewhere").mkdir()
    environment.check_output_paths(argparse.Namespace(output_dir=str(run), overwrite_output_dir=True,
                                                      model_name_or_path=str(tmp_path / "elsewhere")))


@pytest.mark.slow
def test_run_predict_refuses_to_write_over_its_questions(demo_dir, tiny_config, tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"questions": [{"image_id": 1, "question": "what?", "question_id": 1}]}))
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(demo_dir / "X_COCO"), "--model_name_or_path",
                       tiny_config(num_labels=3129), "--questions", str(questions), "--output", str(questions),
                       "--device", "cpu"], check=False, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"error: --output {questions} is the --questions input; writing "
                                                    "it would destroy it; pick another --output")
    assert json.loads(questions.read_text())["questions"][0]["question"] == "what?"


# ---------------------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_imported_boxes_with_nan_or_inf_are_refused_naming_the_image(tmp_path, bad):
    from visualbert.features.importers import import_features

    src = tmp_path / "src"
    src.mkdir()
    boxes = np.array([[0, 0, 50, 100], [10, bad, 20, 20]], np.float32)
    np.savez(src / "good.npz", x=np.ones((2, 4), np.float32), bbox=np.ones((2, 4), np.float32), image_w=100,
             image_h=200)
    np.savez(src / "bad.npz", x=np.ones((2, 4), np.float32), bbox=boxes, image_w=100, image_h=200)
    out, corrupt = import_features("npz_dir", [str(src)], str(tmp_path / "s"), progress=False, log=lambda _: None)
    assert out is None and corrupt == [f"{src / 'bad.npz'}: boxes hold NaN or infinite values"]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("text", [None, 42, "  "])
def test_question_text_that_is_not_text_is_refused_naming_file_and_question(tmp_path, text):
    from visualbert.examples import read_vqa_json

    path = tmp_path / "q.json"
    path.write_text(json.dumps({"questions": [{"image_id": 1, "question": "what?", "question_id": 10},
                                              {"image_id": 1, "question": text, "question_id": 11}]}))
    with pytest.raises(ValueError) as e:
        read_vqa_json(str(path), None, "COCO_val2014_{image_id:012d}")
    assert one_line(e) == f'{path}: question 1 (question_id 11): "question" must be the question text, got {text!r}'


def _images(root, count=2):
    from PIL import Image

    root.mkdir()
    for i in range(count):
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    return root


def test_extract_boxes_entirely_outside_the_image_are_refused_naming_it(tmp_path):
    from visualbert import extract as E

    images = _images(tmp_path / "images")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0": [[0, 0, 8, 8]], "1": [[2, 2, 10, 10], [48, 0, 60, 10]]}))
    with pytest.raises(ValueError) as e:
        E.extract(str(images), str(tmp_path / "feats"), backbone="patches", boxes=str(boxes), image_size=32,
                  num_workers=0, progress=False)
    assert one_line(e) == (f"{images / '1.png'}: box 1 [48.0, 0.0, 60.0, 10.0] of {boxes} lies entirely outside the "
                           "48 x 32 image (boxes are in the original image's pixels)")
    assert not (tmp_path / "feats").exists()


def _full_disk_after(monkeypatch, free_bytes):
    """posix_fallocate as on a disk with ``free_bytes`` left: what the kernel says when blocks run out."""
    import errno

    left = [free_bytes]

    def fallocate(fd, offset, length):
        if length > left[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= length

    monkeypatch.setattr(os, "posix_fallocate", fallocate)


def test_pack_onto_a_full_disk_fails_in_one_line_and_publishes_nothing(tmp_path, monkeypatch, capsys):
    from visualbert.features.__main__ import main as features_main

    write_npy_features(tmp_path, KEYS, dim=64, rows=10)
    out = tmp_path / "store"
    _full_disk_after(monkeypatch, 2000)  # room for the first image's 1280 bytes, not for the second's
    assert features_main(["pack", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", str(tmp_path),
                          "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: [Errno 28] writing {out}.partial failed (No space left on device); nothing was "
                       "published; free space and rerun the same command to resume")
    assert not out.exists()
    monkeypatch.undo()  # space freed: the same command resumes and publishes
    assert features_main(["pack", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", str(tmp_path),
                          "--out", str(out)]) == 0
    assert sorted(F.PackedStore(out).keys()) == sorted(KEYS)


def test_extract_onto_a_full_disk_ends_with_the_error_line(tmp_path, monkeypatch, capsys):
    from visualbert import extract as E

    images = _images(tmp_path / "images", count=6)
    out = tmp_path / "feats"
    _full_disk_after(monkeypatch, 3 * 16 * 192 * 2)  # three images of 16 patches x 192 float16 values
    assert E.main(["--image_dir", str(images), "--output_dir", str(out), "--backbone", "patches", "--image_size", "32",
                   "--batch_size", "1", "--num_workers", "0"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"error: [Errno 28] writing {out}.partial failed (No space left on device); "
                                    "nothing was published; free space and rerun the same command to resume")
    assert not out.exists()


def test_a_second_writer_into_the_same_output_is_refused_naming_the_first(tmp_path):
    import subprocess
    import sys
    import time

    from conftest import ROOT

    out = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from visualbert.features import PackWriter\n"
        f"w = PackWriter({str(out)!r}, {{'a': 1}})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        for params in ({"a": 1}, {"a": 2}):  # the same run again, or another one: neither may touch it
            with pytest.raises(FileExistsError) as e:
                F.PackWriter(str(out), params)
            assert one_line(e) == (f"{out}: in use: another run (pid {holder.pid}) is writing it; wait for it to end "
                                   "or pick another output")
        assert os.path.isdir(f"{out}.partial")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    writer = F.PackWriter(str(out), {"a": 1})  # the lock died with its holder
    writer.add("k", np.ones((2, 4), np.float32))
    writer.finish()
    assert F.PackedStore(out).keys() == ["k"]
