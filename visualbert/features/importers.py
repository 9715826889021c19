"""Public feature releases into a packed store: ``python -m visualbert.features import``.

``--format``:

- ``butd_tsv``: the bottom-up-attention TSV (Anderson et al. 2018) most released COCO / VQA
  features come in: one tab-separated line per image, ``image_id, image_w, image_h, num_boxes,
  boxes, features`` with ``boxes`` / ``features`` base64 of float32 [num_boxes, 4] / [num_boxes, D]
  (36 or 10-100 boxes, D = 2048). LXMERT's ten-field variant (``img_id, img_h, img_w, objects_id,
  objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features``) is read too. Key: the image id
  as written (``42``, ``COCO_val2014_000000000042``). Box geometry is stored.
- ``h5``: HDF5 files holding either one [N, D] dataset per image (the key is its path in the
  file, or its group's path when the dataset is called ``features``; the group's other datasets,
  such as boxes, are then left out), or one array for all
  images: ``features`` / ``image_features`` [num_images, N, D] with ``image_ids`` / ``ids`` /
  ``keys`` [num_images] and optionally ``num_boxes`` [num_images] (rows past it are padding).
  The original VisualBERT's Flickr30K files (bottom-up-attention-vqa / ban-vqa's layout) are read
  too: ``{split}.hdf5`` with ``image_features`` [all boxes, D], ``spatial_features`` [all boxes, 6]
  (normalised x1, y1, x2, y2, w, h: stored as the geometry), ``image_bb`` and ``pos_boxes``
  [num_images, 2] (each image's first and past-last row), named by ``{split}_imgid2idx.pkl`` beside
  it ({image id: row of pos_boxes}; a pickle, read through the restricted unpickler).
- ``npz_dir``: a directory (read recursively) of one ``.npy`` [N, D] or ``.npz`` per image; an
  ``.npz`` keeps its features as ``features``, ``x`` or ``feat`` and, optionally, pixel boxes as
  ``boxes`` / ``bbox`` [N, 4] with ``image_w`` / ``image_h`` (then geometry is stored). The key is
  the path under the directory without its last extension (``dev-850-0-img0.png.npy`` ->
  ``dev-850-0-img0.png``).

Every image is checked (row count, dimension, finite values, box count); each corrupt one is named
in one line on stderr and, if there was any, nothing is published: the good rows stay in the
resumable ``<output_dir>.partial/``, so a rerun after fixing the source only reads the rest.
"""
import base64
import binascii
import os
import sys
import zipfile

import numpy as np

from .. import provenance
from ..progress import track
from ..safeload import UnsafePickleError, load_npy, load_pickle
from ..geometry import GEOMETRY_DIM, box_geometry, check_geometry
from .layouts import check_rows, walk_files
from .pack import PackWriter

__all__ = ["FORMATS", "import_features"]

FORMATS = ("butd_tsv", "h5", "npz_dir")
H5_FEATURES = ("features", "image_features")
H5_IDS = ("image_ids", "ids", "keys", "img_ids")
NPZ_FEATURES = ("features", "x", "feat")
NPZ_BOXES = ("boxes", "bbox")


class Corrupt(Exception):
    """One image of the source cannot be imported; the message names it."""


def _checked(check, *args, **kwargs):
    """``check(*args, **kwargs)``, one of the checks every feature reader and writer shares, its error made
    this image's Corrupt."""
    try:
        return check(*args, **kwargs)
    except ValueError as e:
        raise Corrupt(str(e)) from None


# ---------------------------------------------------------------------------- readers
# Each yields (key, where, load) with load() -> (rows, geometry or None), raising Corrupt; the key
# comes first so that images already in a resumed store are not decoded again.


def _b64_floats(text, where, what):
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Corrupt(f"{where}: {what} are not valid base64 ({e})") from None
    if len(raw) % 4:
        raise Corrupt(f"{where}: {what} are {len(raw)} bytes, not a whole number of float32")
    return np.frombuffer(raw, dtype=np.float32)


def _butd_tsv(paths):
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                fields = line.rstrip("\r\n").split("\t")
                if fields == [""]:
                    continue
                where = f"{path}:{lineno}"
                if len(fields) == 6:
                    key, width, height, num, boxes, feats = fields
                elif len(fields) == 10:
                    key, height, width, num, boxes, feats = (fields[i] for i in (0, 1, 2, 7, 8, 9))
                else:
                    yield None, where, _fail(f"{where}: {len(fields)} tab-separated fields, expected 6 (image_id, image_w, "
                                             "image_h, num_boxes, boxes, features) or LXMERT's 10")
                    continue
                yield key, f"{where} (image_id {key})", _butd_row(width, height, num, boxes, feats, f"{where} (image_id {key})")


def _fail(message):
    def load():
        raise Corrupt(message)

    return load


def _butd_row(width, height, num, boxes, feats, where):
    def load():
        try:
            w, h, n = float(width), float(height), int(num)
        except ValueError:
            raise Corrupt(f"{where}: image_w / image_h / num_boxes are not numbers ({width!r}, {height!r}, {num!r})") from None
        if n < 1:
            raise Corrupt(f"{where}: num_boxes is {n}, expected at least 1")
        box = _b64_floats(boxes, where, "boxes")
        if box.size != n * 4:
            raise Corrupt(f"{where}: boxes hold {box.size} floats, num_boxes {n} needs {n * 4}")
        feat = _b64_floats(feats, where, "features")
        if feat.size == 0 or feat.size % n:
            raise Corrupt(f"{where}: features hold {feat.size} floats, not a multiple of num_boxes {n}")
        return _checked(check_rows, feat.reshape(n, -1), where), _checked(box_geometry, box.reshape(n, 4), w, h, where)

    return load


def _h5(paths):
    import h5py

    for path in paths:
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            yield None, path, _fail(f"{path}: not a readable HDF5 file ({e})")
            continue
        with f:
            if "pos_boxes" in f:
                yield from _h5_pos_boxes(f, path)
                continue
            array = next((f[n] for n in H5_FEATURES if n in f and isinstance(f[n], h5py.Dataset) and f[n].ndim == 3), None)
            if array is not None:
                yield from _h5_one_array(f, path, array)
                continue
            datasets = []
            f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
            if not datasets:
                yield None, path, _fail(f"{path}: no datasets in the file")
            # a group holding "features" is one image; its other datasets (boxes, sizes) describe it
            image_groups = {name.rsplit("/", 1)[0] for name in datasets if name.endswith("/features")}
            for name in sorted(datasets):
                if name.endswith("/features"):
                    key = name.rsplit("/", 1)[0]
                elif "/" in name and name.rsplit("/", 1)[0] in image_groups:
                    continue
                else:
                    key = name
                yield key, f"{path}:{name}", _h5_dataset(f, name, f"{path}:{name}")


def _imgid2idx(path):
    """``{split}_imgid2idx.pkl`` beside ``{split}.hdf5``: {image id: index}, through the restricted unpickler."""
    stem = path[: -len(".hdf5")] if path.endswith(".hdf5") else os.path.splitext(path)[0]
    pkl = stem + "_imgid2idx.pkl"
    if not os.path.isfile(pkl):
        raise Corrupt(f"{path}: pos_boxes layout, but {pkl} (image id -> index) is missing")
    try:
        with open(pkl, "rb") as f:
            table = load_pickle(f, source=pkl, what="image id table")
    except (UnsafePickleError, OSError) as e:
        raise Corrupt(f"{pkl}: not a readable image id table ({type(e).__name__}: {e})") from None
    except ValueError as e:  # truncated or foreign: the message names the file already
        raise Corrupt(str(e)) from None
    if not isinstance(table, dict):
        raise Corrupt(f"{pkl}: expected a dict of image id -> index, found {type(table).__name__}")
    return table


def _h5_pos_boxes(f, path):
    """The original Flickr30K layout: all boxes in one array, pos_boxes[index] = (first, past-last row)."""
    try:
        table = _imgid2idx(path)
    except Corrupt as e:
        yield None, path, _fail(str(e))
        return
    missing = [n for n in ("image_features", "pos_boxes") if n not in f]
    if missing:
        yield None, path, _fail(f"{path}: pos_boxes layout without {', '.join(missing)}")
        return
    features, bounds = f["image_features"], f["pos_boxes"][()]
    spatial = f["spatial_features"] if "spatial_features" in f else None
    for image_id, index in sorted(table.items(), key=lambda item: str(item[0])):
        key = str(image_id)
        where = f"{path}:pos_boxes[{index}] (image id {key})"

        def load(index=index, where=where):
            try:
                start, end = (int(v) for v in bounds[int(index)])
            except (IndexError, TypeError, ValueError):
                raise Corrupt(f"{where}: no such row in pos_boxes ({len(bounds)} images)") from None
            if not 0 <= start < end <= features.shape[0]:
                raise Corrupt(f"{where}: rows {start}..{end} are outside the {features.shape[0]} boxes")
            rows = _checked(check_rows, features[start:end], where)
            if spatial is None:
                return rows, None
            return rows, _checked(check_geometry, spatial[start:end], end - start, f"{where} spatial_features")

        yield key, where, load


def _h5_dataset(f, name, where):
    def load():
        try:
            rows = f[name][()]
        except (OSError, KeyError, ValueError) as e:
            raise Corrupt(f"{where}: cannot be read ({e})") from None
        return _checked(check_rows, rows, where), None

    return load


def _h5_one_array(f, path, array):
    ids_name = next((n for n in H5_IDS if n in f), None)
    if ids_name is None:
        yield None, path, _fail(f"{path}: {array.name} holds all images but there is no id dataset "
                                f"({' / '.join(H5_IDS)}) to name them")
        return
    ids = f[ids_name][()]
    counts = f["num_boxes"][()] if "num_boxes" in f else None
    if len(ids) != array.shape[0] or (counts is not None and len(counts) != array.shape[0]):
        yield None, path, _fail(f"{path}: {array.name} has {array.shape[0]} images, {ids_name} {len(ids)}"
                                + (f", num_boxes {len(counts)}" if counts is not None else ""))
        return
    for i, raw in enumerate(ids):
        key = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        where = f"{path}:{array.name}[{i}] ({ids_name} {key})"

        def load(i=i, where=where):
            try:
                rows = array[i]
            except (OSError, ValueError) as e:
                raise Corrupt(f"{where}: cannot be read ({e})") from None
            if counts is not None:
                n = int(counts[i])
                if not 1 <= n <= rows.shape[0]:
                    raise Corrupt(f"{where}: num_boxes {n} is outside 1..{rows.shape[0]}")
                rows = rows[:n]
            return _checked(check_rows, rows, where), None

        yield key, where, load


def _npz_dir(paths):
    for root in paths:
        if not os.path.isdir(root):
            yield None, root, _fail(f"{root}: not a directory (npz_dir reads a folder of .npy / .npz files)")
            continue
        found = []
        for d, files in walk_files(root, on_loop=_say_loop):
            found += [os.path.join(d, n) for n in files if n.endswith((".npy", ".npz"))]
        if not found:
            yield None, root, _fail(f"{root}: no .npy or .npz files")
        for path in found:
            key = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
            yield key, path, _npz_file(path)


def _say_loop(path, target):
    print(f"note: {path}: left out, a link back to {target}, which holds it (a loop)", file=sys.stderr)


def _npz_file(path):
    def load():
        if path.endswith(".npy"):
            try:
                rows = load_npy(path)
            except Exception as e:  # a broken or hostile file fails in many ways; all mean "corrupt"
                raise Corrupt(f"{path}: not a readable feature array ({type(e).__name__}: {e})") from None
            return _checked(check_rows, rows, path), None
        try:
            with np.load(path, allow_pickle=False) as z:
                name = next((n for n in NPZ_FEATURES if n in z.files), None)
                if name is None:
                    raise Corrupt(f"{path}: no features array ({' / '.join(NPZ_FEATURES)}; found {', '.join(z.files)})")
                rows = _checked(check_rows, z[name], path)
                box = next((n for n in NPZ_BOXES if n in z.files), None)
                if box is None or "image_w" not in z.files or "image_h" not in z.files:
                    return rows, None
                boxes = np.asarray(z[box], dtype=np.float32)
                if boxes.shape[0] != rows.shape[0]:
                    raise Corrupt(f"{path}: {boxes.shape[0]} boxes for {rows.shape[0]} feature rows")
                return rows, _checked(box_geometry, boxes, float(z["image_w"]), float(z["image_h"]), path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise Corrupt(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None

    return load


_READERS = {"butd_tsv": _butd_tsv, "h5": _h5, "npz_dir": _npz_dir}


def _first_good(items):
    """Whether the store keeps geometry: decided by the first image that loads."""
    for key, where, load in items:
        if key is None:
            continue
        try:
            return load()[1] is not None
        except Corrupt:
            continue
    return False


def import_features(fmt, sources, output_dir, dtype="float16", progress=True, log=None):
    """Import ``sources`` of format ``fmt`` into a packed store at ``output_dir``; returns (output_dir, corrupt lines).

    With any corrupt image nothing is published and the lines naming them are returned (each was
    also passed to ``log``); ``output_dir`` is returned only when the store is complete.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format '{fmt}' (expected one of: {', '.join(FORMATS)})")
    sources = [os.path.abspath(s) for s in sources]
    for s in sources:
        if not os.path.exists(s):
            raise FileNotFoundError(f"{s}: --src not found")
    if os.path.exists(output_dir):
        raise FileExistsError(f"{output_dir}: already exists; remove it or pick another --output_dir")
    geometry = _first_good(_READERS[fmt](sources))
    params = {"format": fmt, "sources": sources}
    corrupt, seen = [], {}
    with PackWriter(output_dir, params, dtype=dtype, extras={"boxes": GEOMETRY_DIM} if geometry else None) as writer:
        for key, where, load in track(_READERS[fmt](sources), f"import {fmt}", "img", enabled=progress):
            try:
                if key is not None and key in seen:
                    raise Corrupt(f"{where}: key '{key}' again (first at {seen[key]})")
                if key is not None:
                    seen[key] = where
                if key is not None and key in writer.done:
                    continue
                rows, geom = load()
                if (geom is not None) != geometry:
                    raise Corrupt(f"{where}: {'has no' if geometry else 'has'} boxes, unlike the images before it")
                # the writer refuses a dimension unlike the images before it, and rows its dtype cannot hold
                _checked(writer.add, key, rows, where=where, **({"boxes": geom} if geometry else {}))
            except Corrupt as e:
                corrupt.append(str(e))
                log(f"corrupt: {e}")
        if corrupt:
            return None, corrupt
        out = writer.finish({"imported": {"format": fmt, "sources": sources},
                             "provenance": provenance.imported(fmt, sources, dtype)})
    return out, []
