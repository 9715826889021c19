"""Where each ``--image_feature_type`` keeps its per-image ``.npy`` files, image keys, reading one file,
and the check of an image's feature rows that every reader and importer applies."""
import os
import re
from dataclasses import dataclass

import numpy as np

from ..formats.nlvr2 import parse_nlvr2_image_name
from ..safeload import load_npy, npy_header


@dataclass(frozen=True)
class Layout:
    """Where one ``--image_feature_type`` keeps its per-image files."""

    name: str
    root: str  # relative to input_dir
    splits: tuple
    split_dir: str  # relative to root; {split} is replaced
    dim: int  # the dimension the released checkpoints expect
    max_regions: int  # the box count the features were extracted with

    def root_dir(self, input_dir):
        return os.path.join(os.fspath(input_dir), self.root)

    def split_of(self, key):
        """The split directory an image key lives in (parsed from the key itself)."""
        if self.name == "nlvr2_detectron_fix_144":
            split = parse_nlvr2_image_name(key).split
        else:
            m = re.match(r"COCO_([a-z]+)(\d{4})_\d+$", key)
            if not m:
                raise ValueError(f"{self.name}: image key '{key}' is not of the form COCO_<split><year>_<12-digit id>")
            split = m.group(1) + m.group(2) if self.name == "coco_detectron_fix_100" else m.group(1)
        if split not in self.splits:
            raise ValueError(f"{self.name}: image key '{key}' belongs to split '{split}', which this feature type does not have "
                             f"(splits: {', '.join(self.splits)})")
        return split

    def directory(self, input_dir, split):
        check_split(self, split)
        return os.path.join(self.root_dir(input_dir), self.split_dir.format(split=split))

    def path(self, input_dir, key):
        return os.path.join(self.directory(input_dir, self.split_of(key)), key + ".npy")


FEATURE_TYPES = {
    "coco_detectron_fix_100": Layout("coco_detectron_fix_100", os.path.join("data", "detectron_fix_100", "fc6", "vqa"),
                                     ("train2014", "val2014", "test2015"), "{split}", 2048, 100),
    "coco_detectron_fix_144": Layout("coco_detectron_fix_144", os.path.join("data", "detectron_fix_144", "nlvr2"),
                                     ("train", "val"), os.path.join("{split}", "feature_1024dim"), 1024, 144),
    # test2 is the later-released hidden test split; its identifiers start with "test2-" like test1's.
    "nlvr2_detectron_fix_144": Layout("nlvr2_detectron_fix_144", os.path.join("data", "detectron_fix_144"),
                                      ("train", "dev", "test1", "test2"), os.path.join("{split}", "feature_1024dim"), 1024, 144),
}


def get_layout(image_feature_type):
    try:
        return FEATURE_TYPES[image_feature_type]
    except KeyError:
        raise ValueError(f"unknown --image_feature_type '{image_feature_type}' (expected one of: {', '.join(FEATURE_TYPES)})") from None


def check_split(layout, split):
    if split not in layout.splits:
        raise ValueError(f"unknown split '{split}' for {layout.name} (expected one of: {', '.join(layout.splits)})")


def coco_image_key(image_id, split):
    """Feature key of a COCO image: ``coco_image_key(9, 'train')`` -> ``COCO_train2014_000000000009``."""
    split = {"train": "train2014", "val": "val2014", "test": "test2015"}.get(split, split)
    return f"COCO_{split}_{int(image_id):012d}"


def read_feature_file(path, key=None):
    """Rows of one per-image ``.npy`` as float32 [N, D]; one clear line for anything else."""
    try:
        arr = load_npy(path)
    except FileNotFoundError:
        what = f" for image '{key}'" if key else ""
        raise FileNotFoundError(f"{path}: feature file{what} not found") from None
    return check_rows(arr, path, key)


def check_finite(rows, where, key=None):
    """``rows`` unchanged when every value is finite; else one line naming ``where`` and the image ``key``."""
    if rows.dtype == np.float16:  # an all-ones exponent is Inf or NaN; testing those bits is cheaper than isfinite on fp16
        finite = (rows.view(np.uint16) & 0x7FFF).max(initial=0) < 0x7C00
    else:
        finite = np.isfinite(rows).all()
    if not finite:
        what = f" of image '{key}'" if key else ""
        raise ValueError(f"{where}: the region features{what} contain NaN or Inf (extract or import them again)")
    return rows


def source_stamp(path):
    """What a per-image file looked like when it was packed: [size, mtime in ns]."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def check_rows(arr, where, key=None):
    """``arr`` as float32 [N >= 1, D >= 1] region features, every value finite: the one check of each
    image's features, whether read from a per-image file or imported from a release. The error names
    ``where`` (the file, line or dataset) and the image ``key`` when given."""
    arr = np.asarray(arr)
    check_row_shape(arr.shape, arr.dtype, where)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf, which check_finite names
        rows = np.asarray(arr, dtype=np.float32)
    return check_finite(rows, where, key)


def check_row_shape(shape, dtype, where):
    """Whether a feature array of ``shape`` and ``dtype`` (from the data or a .npy header alone) holds
    numeric [N >= 1, D >= 1] rows; one line naming ``where`` if not."""
    if dtype.hasobject or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{where}: expected a numeric [N, D] feature array, found dtype {dtype}")
    if len(shape) != 2:
        raise ValueError(f"{where}: expected a [N, D] feature array, found shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError(f"{where}: feature array has zero rows (at least one region is needed)")
    if shape[1] == 0:
        raise ValueError(f"{where}: feature array has zero columns")


def npy_shape(path):
    """Shape and dtype from a .npy header without reading the data."""
    with open(path, "rb") as f:
        shape, dtype = npy_header(f, path)
        header_end = f.tell()
    if not dtype.hasobject:
        expected = header_end + int(np.prod(shape)) * dtype.itemsize
        if os.path.getsize(path) < expected:
            raise ValueError(f"{path}: truncated .npy ({os.path.getsize(path)} bytes, header promises {expected})")
    return shape, dtype


def walk_files(top, on_loop=None):
    """``(folder, sorted file names)`` of every folder under ``top``, in sorted order, following linked
    folders (users link their image or feature folders in rather than copy them). A link back to a
    folder the walk is already inside would never end: it is left out, and ``on_loop(path, target)``
    (when given) is told which."""
    chains = {top: (os.path.realpath(top),)}
    for folder, dirs, files in os.walk(top, followlinks=True):
        chain = chains.pop(folder)
        kept = []
        for name in sorted(dirs):
            path = os.path.join(folder, name)
            target = os.path.realpath(path)
            if target in chain:
                if on_loop is not None:
                    on_loop(path, target)
                continue
            chains[path] = chain + (target,)
            kept.append(name)
        dirs[:] = kept
        yield folder, sorted(files)

