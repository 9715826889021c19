"""Writing packed stores (resumable, published atomically) and inspecting a type's per-image files."""
import errno
import fcntl
import json
import os
import shutil

import numpy as np

from .. import provenance
from ..progress import track
from .layouts import check_finite, check_row_shape, npy_shape, read_feature_file, source_stamp
from .stores import PACK_FORMAT, PACK_VERSION, FeatureStore, default_pack_dir, open_features


def pack_features(image_feature_type, input_dir, out=None, split=None, dtype="float16", progress=True, _reader=None):
    """Pack every per-image file of a type (or one split) into a packed store at ``out``; returns ``out``.

    Resumable and atomic as :class:`PackWriter` describes: a rerun after a kill resumes from the
    last finished image.
    """
    out = os.path.abspath(out or default_pack_dir(image_feature_type, input_dir, split))
    if os.path.exists(out):
        raise FileExistsError(f"{out}: already exists; remove it to pack again")
    store = FeatureStore(image_feature_type, input_dir, split=split, use_packed=False)
    files = list(store.iter_files())
    if not files:
        raise FileNotFoundError(f"{store.where()}: no per-image .npy feature files to pack for {image_feature_type}")
    reader = _reader or read_feature_file
    with PackWriter(out, {"image_feature_type": image_feature_type, "split": split}, dtype=dtype) as writer:
        for key, path in track(files, f"pack {image_feature_type}", "img", enabled=progress):
            if key not in writer.done:
                stamp = source_stamp(path)  # before reading: a change during the read then shows as stale
                writer.add(key, reader(path, key), where=path, stamp=stamp)
        return writer.finish({"image_feature_type": image_feature_type, "split": split,
                              "provenance": dict(provenance.detectron(image_feature_type), dtype=writer.dtype.name)})


class PackWriter:
    """Builds a packed store at ``out`` one image at a time; resumable after a kill, published atomically.

    Work goes into ``<out>.partial/``: rows are appended to ``features.bin`` (and each side array of
    ``extras``, ``{name: dim}``, float32 rows aligned with the feature rows, to ``<name>.bin``),
    then one line per finished image to ``progress.jsonl``. A new writer with the same ``params``
    continues a partial store (``done`` holds the keys already written; the caller skips them);
    other params start it over. ``finish`` writes index and metadata and renames the directory to
    ``out``, so nothing at ``out`` ever looks complete before it is.

    One writer at a time: the partial directory is locked for the writer's life (the kernel drops the
    lock however the process ends), so a second run into the same output is refused. Every append
    reserves its blocks first (``posix_fallocate``), so a full disk fails the write that meets it,
    never a later read of a file with holes; such a failure publishes nothing.
    """

    def __init__(self, out, params, dtype="float16", extras=None):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype("float16"), np.dtype("float32")):
            raise ValueError(f"--dtype must be float16 or float32, got {self.dtype}")
        self.out = os.path.abspath(out)
        if os.path.exists(self.out):
            raise FileExistsError(f"{self.out}: already exists; remove it to write it again")
        self.extras = {name: int(d) for name, d in (extras or {}).items()}
        self.partial = self.out + ".partial"
        params = dict(params, dtype=self.dtype.name, version=PACK_VERSION)
        if self.extras:
            params["extras"] = self.extras
        os.makedirs(self.partial, exist_ok=True)
        self._lock = _lock_partial(self.partial, self.out)
        try:
            with _WriteFailure(self.partial):
                self._open(params)
        except BaseException:
            os.close(self._lock)
            raise

    def _open(self, params):
        state = _resume_state(self.partial, params)
        with open(os.path.join(self.partial, "params.json"), "w") as f:
            json.dump(params, f)
        self.keys, self.offsets, self.rows, self.sources = state["keys"], state["offsets"], state["rows"], state["sources"]
        self.dim, self.total = state["dim"], state["total"]
        self.done = set(self.keys)
        self._bin = _open_for_append(os.path.join(self.partial, "features.bin"))
        self._bin.truncate(self.total * (self.dim or 0) * self.dtype.itemsize)
        self._extra_bins = {}
        for name, d in self.extras.items():
            self._extra_bins[name] = _open_for_append(os.path.join(self.partial, name + ".bin"))
            self._extra_bins[name].truncate(self.total * d * 4)
        self._progress = _open_for_append(os.path.join(self.partial, "progress.jsonl"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for f in [self._bin, self._progress] + list(self._extra_bins.values()):
            if not f.closed:
                try:
                    f.close()
                except OSError:  # a write that failed already said so; the partial store is resumable
                    pass
        if self._lock is not None:
            os.close(self._lock)  # drops the lock
            self._lock = None

    def add(self, key, rows, where=None, stamp=None, **extras):
        """Append the [N, D] ``rows`` of ``key`` (and its [N, dim] side arrays named in ``extras``);
        ``stamp`` is its per-image source file's ``source_stamp``, when it has one."""
        if key in self.done:
            raise ValueError(f"{where or key}: key '{key}' is already in the store")
        if self.dim is not None and rows.shape[1] != self.dim:
            raise ValueError(f"{where or key}: feature dim {rows.shape[1]}, the images before it have {self.dim}")
        n = int(rows.shape[0])
        if set(extras) != set(self.extras):
            raise ValueError(f"{where or key}: side arrays {sorted(extras)}, the store keeps {sorted(self.extras)}")
        for name, arr in extras.items():
            if tuple(arr.shape) != (n, self.extras[name]):
                raise ValueError(f"{where or key}: {name} has shape {tuple(arr.shape)}, expected ({n}, {self.extras[name]})")
        with np.errstate(over="ignore"):  # checked on the next line, with the file named
            packed = np.ascontiguousarray(rows, dtype=self.dtype)
        check_finite(packed, f"{where or key} as {self.dtype.name}", key)  # fp16 turns values beyond 65504 into Inf
        self.dim = int(rows.shape[1])  # set by the first image that is written, not one refused
        with _WriteFailure(self.partial):
            for name, arr in extras.items():
                _append(self._extra_bins[name], np.ascontiguousarray(arr, dtype=np.float32).tobytes())
            _append(self._bin, packed.tobytes())
            # The progress line goes after the rows, so a kill between the two only loses this image.
            _append(self._progress, (json.dumps([key, self.total, n, self.dim, stamp]) + "\n").encode())
        self.keys.append(key)
        self.offsets.append(self.total)
        self.rows.append(n)
        self.sources.append(stamp)
        self.done.add(key)
        self.total += n

    def finish(self, meta=None):
        """Write index and metadata (``meta`` adds fields to meta.json), publish at ``out``; returns ``out``."""
        if not self.keys:
            raise ValueError(f"{self.out}: no images were written; nothing to publish")
        with _WriteFailure(self.partial):
            self._publish(meta)
        return self.out

    def _publish(self, meta):
        for f in [self._bin] + list(self._extra_bins.values()):
            os.fsync(f.fileno())
        for f in [self._bin, self._progress] + list(self._extra_bins.values()):
            f.close()
        with open(os.path.join(self.partial, "index.json"), "w") as f:
            json.dump({"keys": self.keys, "offsets": self.offsets, "rows": self.rows, "sources": self.sources}, f)
            f.flush()
            os.fsync(f.fileno())
        full = {"format": PACK_FORMAT, "version": PACK_VERSION, **(meta or {}), "dtype": self.dtype.name,
                "dim": int(self.dim), "num_images": len(self.keys), "num_rows": int(self.total)}
        if self.extras:
            full["extras"] = {name: {"dim": d, "dtype": "float32"} for name, d in self.extras.items()}
        with open(os.path.join(self.partial, "meta.json"), "w") as f:
            json.dump(full, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for name in ("progress.jsonl", "params.json", _WRITER_PID):
            os.remove(os.path.join(self.partial, name))
        os.rename(self.partial, self.out)


_WRITER_PID = "writer.pid"  # in the partial directory: who holds its lock


def _lock_partial(partial, out):
    """Lock the partial directory of ``out`` for this process (a descriptor to close), or refuse in one line."""
    fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        try:
            with open(os.path.join(partial, _WRITER_PID)) as f:
                holder = f.read().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise FileExistsError(f"{out}: in use: another run (pid {holder}) is writing it; wait for it to end or pick "
                              "another output") from None
    if os.path.exists(out):  # published by the run that held the lock until now
        os.close(fd)
        raise FileExistsError(f"{out}: already exists; remove it to write it again")
    with open(os.path.join(partial, _WRITER_PID), "w") as f:
        f.write(f"{os.getpid()}\n")
    return fd


def _open_for_append(path):
    """A binary file to append to with ``_append``: not O_APPEND, whose writes go past reserved blocks."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644), "r+b")


def _append(f, data):
    """Write ``data`` at the end of ``f`` on blocks reserved first, so a full disk fails here; on a
    failure the file is cut back to where it ended (a resumed run reads it up to its last progress line)."""
    f.flush()
    end = os.fstat(f.fileno()).st_size
    try:
        if hasattr(os, "posix_fallocate") and data:
            try:
                os.posix_fallocate(f.fileno(), end, len(data))
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: the write decides
                    raise
        f.seek(end)
        f.write(data)
        f.flush()
    except OSError:
        try:
            os.ftruncate(f.fileno(), end)
        except OSError:
            pass
        raise


class _WriteFailure:
    """A failed write (full disk, gone read-only) as one line naming ``path``; nothing is published."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise OSError(error.errno, f"writing {self.path} failed ({error.strerror}); nothing was published; "
                                       "free space and rerun the same command to resume") from None
        return False


def _resume_state(partial, params):
    empty = {"keys": [], "offsets": [], "rows": [], "sources": [], "dim": None, "total": 0}
    if not os.path.isdir(partial):
        return empty
    try:
        with open(os.path.join(partial, "params.json")) as f:
            old = json.load(f)
    except (OSError, json.JSONDecodeError):
        old = None
    if old != params:
        # A partial pack with other settings cannot be continued; start over.
        _clear(partial)
        return empty
    state = dict(empty, keys=[], offsets=[], rows=[], sources=[])
    itemsize = np.dtype(params["dtype"]).itemsize
    extras = params.get("extras", {})
    try:
        size = os.path.getsize(os.path.join(partial, "features.bin"))
        extra_sizes = {name: os.path.getsize(os.path.join(partial, name + ".bin")) for name in extras}
        with open(os.path.join(partial, "progress.jsonl")) as f:
            lines = f.read().split("\n")
    except OSError:
        _clear(partial)
        return empty
    for line in lines:
        try:
            key, offset, n, dim, stamp = json.loads(line)
        except (ValueError, TypeError):
            break  # the last line may be cut short by the kill
        if offset != state["total"] or (offset + n) * dim * itemsize > size:
            break
        if any((offset + n) * d * 4 > extra_sizes[name] for name, d in extras.items()):
            break
        state["keys"].append(key)
        state["offsets"].append(offset)
        state["rows"].append(n)
        state["sources"].append(stamp)
        state["dim"] = dim
        state["total"] = offset + n
    with open(os.path.join(partial, "progress.jsonl"), "w") as f:
        f.writelines(json.dumps([k, o, n, state["dim"], st]) + "\n"
                     for k, o, n, st in zip(state["keys"], state["offsets"], state["rows"], state["sources"]))
    return state


def _clear(partial):
    """Empty the partial directory, keeping the directory itself (its lock) and the writer's pid."""
    for entry in os.scandir(partial):
        if entry.name == _WRITER_PID:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def inspect_features(image_feature_type, input_dir, split=None, expected_keys=None, progress=True):
    """Counts, dims and rows min/mean/max of a feature type; ``missing`` lists expected keys without features.

    Reads only the .npy headers (and the packed index), so it is fast on large stores;
    ``changed_since_packing`` lists per-image files that differ from what a packed store holds.
    """
    if not os.path.isdir(input_dir):  # else it would report an empty store
        raise FileNotFoundError(f"--input_dir {os.fspath(input_dir)}: no such directory")
    store = open_features(image_feature_type, input_dir, split=split)
    rows, dims, bad, stale = {}, {}, [], []
    for p in store.packed:
        for k in p.keys():
            if split is None or store.layout.split_of(k) == split:
                if k not in rows:
                    rows[k] = p.rows(k)
                    dims[p.dim] = dims.get(p.dim, 0) + 1
                    if p.changed_since_packing(k, store.path(k)):
                        stale.append(store.path(k))
    packed_keys = len(rows)
    files = [(k, path) for k, path in store.iter_files() if k not in rows]
    for key, path in track(files, f"inspect {image_feature_type}", "img", enabled=progress):
        try:
            shape, dtype = npy_shape(path)
            check_row_shape(shape, dtype, path)
        except ValueError as e:
            bad.append(str(e))
            continue
        rows[key] = int(shape[0])
        dims[int(shape[1])] = dims.get(int(shape[1]), 0) + 1
    counts = np.array(list(rows.values()) or [0])
    report = {
        "image_feature_type": image_feature_type,
        "root": store.where(),
        "packed_stores": [p.directory for p in store.packed],
        "images": len(rows),
        "images_packed": packed_keys,
        "dims": {str(k): v for k, v in sorted(dims.items())},
        "rows_min": int(counts.min()),
        "rows_mean": float(counts.mean()),
        "rows_max": int(counts.max()),
        "bad_files": bad,
        "changed_since_packing": stale,
    }
    if expected_keys is not None:
        expected = list(dict.fromkeys(expected_keys))
        missing = [k for k in expected if k not in rows]
        report["expected"] = len(expected)
        report["missing"] = missing
    return report


def inspect_store(directory, expected_keys=None):
    """The report of :func:`inspect_features` for the packed store ``--features DIR`` names (written by
    ``visualbert.extract`` or ``features import``), plus ``made_by``: how its features were made."""
    from .stores import open_feature_dir

    features = open_feature_dir(directory)
    store = features.store
    counts = np.array([store.rows(k) for k in store.keys()] or [0])
    meta = store.meta
    report = {
        "image_feature_type": meta.get("image_feature_type") or "packed store",
        "root": os.fspath(directory),
        "packed_stores": [os.fspath(directory)],
        "images": len(store),
        "images_packed": len(store),
        "dims": {str(store.dim): len(store)},
        "rows_min": int(counts.min()),
        "rows_mean": float(counts.mean()),
        "rows_max": int(counts.max()),
        "bad_files": [],
        "changed_since_packing": [],
        "made_by": meta.get("extracted") or meta.get("imported"),
    }
    if expected_keys is not None:
        expected = list(dict.fromkeys(expected_keys))
        report["expected"] = len(expected)
        report["missing"] = [k for k in expected if k not in features]
    return report

