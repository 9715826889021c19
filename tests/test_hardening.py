"""Faults that used to do harm quietly: pickles by another door, tensors past their storage, packed
stores whose index lies, outputs that are inputs, and writers that race or run out of disk."""
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from test_bad_input import KEYS, one_line, plant_payload, write_npy_features
from visualbert import features as F, loading
from visualbert.modeling import VisualBertConfig, VisualBertForVisualReasoning
from visualbert.torch_checkpoint import load_torch_file


# ---------------------------------------------------------------------------- weights by another door


@pytest.fixture
def model_dir(tmp_path, tiny_config):
    with open(tiny_config()) as f:
        directory = tmp_path / "model"
        VisualBertForVisualReasoning(VisualBertConfig(**json.load(f))).save_pretrained(str(directory))
    return directory


def load_refusal(path):
    with pytest.raises(SystemExit) as e, loading.user_errors():
        loading.load_model(VisualBertForVisualReasoning, str(path))
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
    loaded = loading.load_model(VisualBertForVisualReasoning, str(model_dir))
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


_rebuild.__module__, _rebuild.__qualname__, _rebuild.__name__ = "torch._utils", "_rebuild_tensor_v2", "_rebuild_tensor_v2"


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
