"""Reading PyTorch checkpoints into numpy without torch, and without trusting their pickles.

Both of torch's on-disk formats are handled: the zip format (torch >= 1.6: ``pytorch_model.bin``,
modern ``.th``) and the legacy stream format the original uclanlp ``.th`` files use (magic-number
pickle, protocol, sys_info, the object pickle, the storage-key list, then the raw storages).
Every pickle goes through ``safeload.RestrictedUnpickler``; the only names added to its allow-list
are torch's tensor-rebuild functions and storage types, replaced by numpy stand-ins here, so a
file that names anything else (``os.system``, ...) raises ``UnsafePickleError`` before it runs.
"""
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from .safeload import RestrictedUnpickler

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]
        self.itemsize = 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy) or come from a zip member."""

    def __init__(self, storage_type, key, base=None, offset=0):
        self.type, self.key, self.base, self.offset = storage_type, key, base, offset
        self.array = None

    def resolve(self):
        if self.base is not None:
            base = self.base.resolve()
            if not isinstance(self.offset, int) or not 0 <= self.offset <= len(base):
                raise ValueError(f"storage view {self.key} starts at element {self.offset!r}, outside its storage "
                                 f"{self.base.key} of {len(base)} elements")
            return base[self.offset:]
        if self.array is None:
            raise ValueError(f"storage {self.key} has no data in the file")
        return self.array


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self, name):
        """The tensor as a numpy array, once its extent is known to lie inside its storage: as_strided
        reads wherever offset, shape and strides point, so a crafted file could otherwise copy the
        process's memory past the buffer into the converted checkpoint."""
        flat = self.storage.resolve()
        self._check_extent(name, len(flat))
        if not self.size:
            return flat[self.offset].copy().reshape(())
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride]
        )
        return np.ascontiguousarray(view)

    def _check_extent(self, name, storage_len):
        what = (f"tensor '{name}' (offset {self.offset}, shape {list(self.size)}, strides {list(self.stride)}) "
                f"does not fit its storage of {storage_len} elements")
        numbers = (self.offset, *self.size, *self.stride)
        if not all(type(v) is int for v in numbers) or len(self.size) != len(self.stride):  # bool is not a size
            raise ValueError(what)
        if self.offset < 0 or any(v < 0 for v in self.size) or any(v < 0 for v in self.stride):
            raise ValueError(what)
        if 0 in self.size:
            if self.offset > storage_len:
                raise ValueError(what)
            return
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= storage_len:
            raise ValueError(what)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


def _allowed_torch_names():
    extra = {("torch._utils", name): _rebuild_tensor for name in ("_rebuild_tensor", "_rebuild_tensor_v2")}
    extra[("torch._utils", "_rebuild_parameter")] = _rebuild_parameter
    extra[("torch._utils", "_rebuild_parameter_with_state")] = _rebuild_parameter
    for name in _STORAGE_DTYPES:
        extra[("torch", name)] = _StorageType(name)
    return extra


def _to_numpy(raw, storage_type, little_endian=True):
    if storage_type.dtype == "bfloat16":
        # numpy has no bfloat16; its bits are the top half of a float32.
        halves = np.frombuffer(raw, dtype="<u2" if little_endian else ">u2").astype(np.uint32)
        return (halves << 16).view(np.float32)
    dtype = np.dtype(storage_type.dtype).newbyteorder("<" if little_endian else ">")
    return np.frombuffer(raw, dtype=dtype).astype(np.dtype(storage_type.dtype), copy=False)


def _materialize(obj, name=""):
    """``obj`` with numpy arrays in place of tensor references; ``name`` is where it sits (``a.b.0``)."""
    if isinstance(obj, _TensorRef):
        return obj.materialize(name or "<top level>")
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v, _join(name, k))) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, _join(name, i)) for i, v in enumerate(obj))
    return obj


def _join(name, key):
    return f"{name}.{key}" if name else str(key)


class _Unpickler(RestrictedUnpickler):
    def __init__(self, file, source, persistent_load):
        super().__init__(file, source=source, extra=_allowed_torch_names(), encoding="latin1")
        self._persistent = persistent_load

    def persistent_load(self, pid):
        return self._persistent(pid)


def _storage_type(source, value):
    if isinstance(value, _StorageType):
        return value
    if isinstance(value, str) and value in _STORAGE_DTYPES:
        return _StorageType(value)
    raise ValueError(f"{source}: unsupported tensor storage type {value!r}")


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise ValueError(f"{path}: zip file without a data.pkl: not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            little = archive.read(prefix + "byteorder").decode().strip() != "big"
        storages = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
                raise ValueError(f"{path}: unexpected persistent id {pid!r}")
            stype, key = _storage_type(path, pid[1]), str(pid[2])
            if key not in storages:
                storage = _Storage(stype, key)
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise ValueError(f"{path}: storage {key} is missing from the archive")
                storage.array = _to_numpy(archive.read(member), stype, little)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as f:
            obj = _Unpickler(io.BytesIO(f.read()), path, persistent_load).load()
    return _materialized(obj, path)


def _load_legacy(path):
    with open(path, "rb") as f:
        def header():
            return RestrictedUnpickler(f, source=path, encoding="latin1").load()

        try:
            magic, protocol, sys_info = header(), header(), header()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise ValueError(f"{path}: not a PyTorch checkpoint ({e})") from None
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number or protocol)")
        little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
        storages = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
                raise ValueError(f"{path}: unexpected persistent id {pid!r}")
            stype, root_key, _location, _numel, view = pid[1:6] if len(pid) >= 6 else (*pid[1:5], None)
            stype = _storage_type(path, stype)
            root_key = str(root_key)
            if root_key not in storages:
                storages[root_key] = _Storage(stype, root_key)
            if view is None:
                return storages[root_key]
            view_key, offset, _size = view
            return _Storage(stype, str(view_key), base=storages[root_key], offset=offset)

        obj = _Unpickler(f, path, persistent_load).load()
        keys = RestrictedUnpickler(f, source=path, encoding="latin1").load()
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise ValueError(f"{path}: storage {key} is listed but never used")
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: truncated (storage {key} missing)")
            (numel,) = struct.unpack("<q" if little else ">q", head)
            raw = f.read(numel * storage.type.itemsize)
            if len(raw) != numel * storage.type.itemsize:
                raise ValueError(f"{path}: truncated (storage {key} is short)")
            storage.array = _to_numpy(raw, storage.type, little)
    return _materialized(obj, path)


def _materialized(obj, path):
    try:
        return _materialize(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_torch_file(path):
    """Load a PyTorch-saved object (normally a state dict) with numpy arrays in place of tensors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)
