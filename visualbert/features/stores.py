"""Reading region features: the packed store, a store plus per-image files of one type, a directory of files."""
import os
import re
import sys

import numpy as np

from ..formats.common import read_json
from ..geometry import check_geometry
from .layouts import check_finite, check_split, get_layout, npy_shape, read_feature_file, source_stamp

PACK_FORMAT = "visualbert-packed-features"
PACK_VERSION = 2  # 2: the index records each source file's size and mtime


class PackedStore:
    """One packed store directory: a memory-mapped row file plus its index.

    The memory map is opened lazily in each process, so a store handed to DataLoader workers does
    not share a file position or pickle the mapping.
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        meta_path = os.path.join(self.directory, "meta.json")
        meta = _read_store_json(self.directory, "meta.json")
        index = _read_store_json(self.directory, "index.json")
        if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{meta_path}: not a packed feature store (format field is {found!r})")
        self.meta = meta
        try:
            self.dim = int(meta["dim"])
            self.dtype = np.dtype(meta["dtype"])
            self.num_rows = int(meta["num_rows"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{meta_path}: bad or missing field ({type(e).__name__}: {e})") from None
        self.index = _checked_index(index, os.path.join(self.directory, "index.json"), self.num_rows)
        self.sources = dict(zip(index["keys"], index["sources"])) if "sources" in index else None
        if self.sources is None:
            print(f"note: {self.directory} was packed without source-file records, so per-image files changed "
                  "since are not detected; pack again to have them checked", file=sys.stderr, flush=True)
        self._check_size("features.bin", self.dim * self.dtype.itemsize)
        for name, info in meta.get("extras", {}).items():
            self._check_size(name + ".bin", int(info["dim"]) * np.dtype(info["dtype"]).itemsize)
        self._mmap = None

    def _check_size(self, name, row_bytes):
        """The row file ``name`` holds exactly the rows meta.json promises (not fewer: rows past its end
        would be read as whatever a memory map gives; not more: a writer that went wrong)."""
        path = os.path.join(self.directory, name)
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.directory}: not a complete packed feature store (missing {name})") from None
        if size != self.num_rows * row_bytes:
            raise ValueError(f"{path}: {size} bytes, index promises {self.num_rows * row_bytes}")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mmap"] = None
        return state

    def _rows(self):
        if self._mmap is None:
            self._mmap = np.memmap(os.path.join(self.directory, "features.bin"), dtype=self.dtype, mode="r",
                                   shape=(self.num_rows, self.dim))
        return self._mmap

    def __contains__(self, key):
        return key in self.index

    def __len__(self):
        return len(self.index)

    def keys(self):
        return list(self.index)

    def rows(self, key):
        return self.index[key][1]

    def changed_since_packing(self, key, source_path):
        """True when ``source_path`` (the per-image file ``key`` was packed from) differs in size or
        mtime from what was packed; a removed source is fine (the rows are all that is needed)."""
        if self.sources is None or self.sources.get(key) is None:  # imported stores have no per-image source
            return False
        try:
            return source_stamp(source_path) != list(self.sources[key])
        except FileNotFoundError:
            return False

    def get(self, key, max_regions=None, dtype=np.float32):
        """Rows of ``key``; ``dtype=None`` keeps the on-disk dtype (half the bytes to move for fp16)."""
        offset, n = self.index[key]
        if max_regions is not None:
            n = min(n, max_regions)
        rows = np.asarray(self._rows()[offset:offset + n], dtype=dtype)
        return check_finite(rows, os.path.join(self.directory, "features.bin"), key)

    def extra(self, name, key):
        """float32 side rows stored with the features of ``key``, e.g. ``boxes``: normalised x1, y1, x2, y2, w, h."""
        info = self.meta.get("extras", {}).get(name)
        if info is None:
            raise KeyError(f"{self.directory}: the store keeps no '{name}' beside its features")
        offset, n = self.index[key]
        rows = np.memmap(os.path.join(self.directory, name + ".bin"), dtype=info["dtype"], mode="r",
                         shape=(self.num_rows, int(info["dim"])))
        return np.array(rows[offset:offset + n])


def _read_store_json(directory, name):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: not a complete packed feature store (missing {name})")
    return read_json(path, f"the packed store's {name} (the store is corrupt: write it again)")


def _checked_index(index, path, num_rows):
    """{key: (offset, rows)} of a store's index, each entry inside the ``num_rows`` rows of the store."""
    if not isinstance(index, dict) or not all(isinstance(index.get(f), list) for f in ("keys", "offsets", "rows")):
        raise ValueError(f"{path}: expected an object with lists 'keys', 'offsets' and 'rows'")
    keys, offsets, rows = index["keys"], index["offsets"], index["rows"]
    if not len(keys) == len(offsets) == len(rows) or ("sources" in index and len(index["sources"]) != len(keys)):
        raise ValueError(f"{path}: its lists differ in length ({len(keys)} keys, {len(offsets)} offsets, "
                         f"{len(rows)} row counts)")
    checked = {}
    for key, offset, n in zip(keys, offsets, rows):
        numbers = type(offset) is int and type(n) is int  # not bool, not float
        if not isinstance(key, str) or not numbers or offset < 0 or n < 0 or offset + n > num_rows:
            raise ValueError(f"{path}: entry {key!r} (offset {offset!r}, {n!r} rows) lies outside the store's "
                             f"{num_rows} rows; the store is corrupt, write it again")
        if key in checked:
            raise ValueError(f"{path}: key {key!r} appears twice")
        checked[key] = (offset, n)
    return checked


class DirectoryFeatures:
    """The packed store that ``--features DIR`` names (written by ``visualbert.extract`` or
    ``features import``), with the interface of :class:`FeatureStore`.

    Keys are looked up as the datasets name them; a key ending in an image extension
    (``dev-850-0-img0.png``) also finds the key without it, which is how ``visualbert.extract``
    names the file ``dev-850-0-img0.png``, and a COCO key (``COCO_train2014_000000000009``) also
    finds the bare image id (``9``), as ``features import`` of the COCO bottom-up-attention TSVs keys it.
    """

    image_feature_type = "--features"

    def __init__(self, directory, max_regions=None):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{directory}: --features directory not found (write one with python -m visualbert.extract "
                                    "or python -m visualbert.features import)")
        self.store = PackedStore(directory)
        self.directory = self.store.directory
        if max_regions is not None and int(max_regions) < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.max_regions = None if max_regions is None else int(max_regions)
        self.dim = self.store.dim
        self.packed = [self.store]

    def _key(self, key):
        if key not in self.store:
            stem, ext = os.path.splitext(key)
            if ext.lower() in IMAGE_EXTENSIONS and stem in self.store:
                return stem
            coco = _COCO_KEY.fullmatch(key)
            if coco and str(int(coco.group(1))) in self.store:
                return str(int(coco.group(1)))
        return key

    def where(self):
        return self.directory

    def path(self, key):
        return self.directory

    def keys(self):
        return self.store.keys()

    def __contains__(self, key):
        return self._key(key) in self.store

    def rows(self, key):
        return self.store.rows(self._key(key))

    def get(self, key, dtype=np.float32):
        return self.store.get(self._key(key), self.max_regions, dtype)

    @property
    def has_boxes(self):
        """Whether the store keeps each region's box geometry (extract, ``features import`` with boxes)."""
        return "boxes" in self.store.meta.get("extras", {})

    def boxes(self, key):
        """float32 [N, 6] geometry of ``key``'s regions (normalised x1, y1, x2, y2, w, h), capped as ``get``."""
        rows = self.store.extra("boxes", self._key(key))[: self.max_regions]
        return check_geometry(rows, len(rows), os.path.join(self.directory, "boxes.bin"), key)


# A COCO key (COCO_train2014_000000000009) also finds the bare image id (9): the key the
# bottom-up-attention TSVs of COCO give their images once imported.
_COCO_KEY = re.compile(r"COCO_[a-z]+\d{4}_(\d{12})")
# What visualbert.extract reads, and what DirectoryFeatures strips from dataset keys.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class FeatureStore:
    """Features of one ``--image_feature_type`` under one ``input_dir``.

    ``get(key)`` -> float32 [N, D] (N capped at ``max_regions``); ``dim`` is the real feature
    dimension (read from a packed store or the first file), ``layout.dim`` the nominal one.
    """

    def __init__(self, image_feature_type, input_dir, split=None, max_regions=None, packed_dirs=None, use_packed=True):
        self.layout = get_layout(image_feature_type)
        self.image_feature_type = image_feature_type
        self.input_dir = os.fspath(input_dir)
        if not os.path.isdir(self.input_dir):
            raise FileNotFoundError(f"--input_dir {self.input_dir}: no such directory")
        if split is not None:
            check_split(self.layout, split)
        self.split = split
        if max_regions is not None and int(max_regions) < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.max_regions = None if max_regions is None else int(max_regions)
        self.packed = []
        if use_packed:
            dirs = list(packed_dirs) if packed_dirs else _find_packed(self.layout.root_dir(self.input_dir))
            self.packed = [PackedStore(d) for d in dirs]
            for p in self.packed:
                if p.meta.get("image_feature_type") not in (None, image_feature_type):
                    raise ValueError(f"{p.directory}: packed store holds {p.meta.get('image_feature_type')}, not {image_feature_type}")
        self._dim = None
        self._dim_source = None  # the file the dimension was read from, named when another file disagrees

    @property
    def dim(self):
        if self._dim is None:
            if self.packed:
                self._dim = self.packed[0].dim
            else:
                first = next(iter(self.iter_files()), None)
                if first is None:
                    raise FileNotFoundError(f"{self.where()}: no feature files found for {self.image_feature_type}")
                shape, _ = npy_shape(first[1])
                if len(shape) != 2:
                    raise ValueError(f"{first[1]}: expected a [N, D] feature array, found shape {tuple(shape)}")
                self._dim = int(shape[1])
                self._dim_source = first[1]
        return self._dim

    def where(self):
        """The directory its per-image files are under (for messages)."""
        if self.split:
            return self.layout.directory(self.input_dir, self.split)
        return self.layout.root_dir(self.input_dir)

    def iter_files(self):
        """(key, path) of every per-image .npy file on disk for the type (or for its split)."""
        splits = [self.split] if self.split else list(self.layout.splits)
        for split in splits:
            d = self.layout.directory(self.input_dir, split)
            if not os.path.isdir(d):
                continue
            names = sorted(e.name for e in os.scandir(d) if e.name.endswith(".npy") and not e.name.endswith("_info.npy"))
            for name in names:
                yield name[:-4], os.path.join(d, name)

    def path(self, key):
        return self.layout.path(self.input_dir, key)

    def keys(self):
        """Every key with features: packed stores first, then per-image files."""
        seen = {}
        for p in self.packed:
            for k in p.keys():
                seen.setdefault(k, None)
        for k, _ in self.iter_files():
            seen.setdefault(k, None)
        if self.split:
            return [k for k in seen if self.layout.split_of(k) == self.split]
        return list(seen)

    def __contains__(self, key):
        return any(key in p for p in self.packed) or os.path.exists(self.path(key))

    def rows(self, key):
        for p in self.packed:
            if key in p:
                return p.rows(key)
        shape, _ = npy_shape(self.path(key))
        return int(shape[0])

    # The original per-image .npy layouts hold features only.
    has_boxes = False

    def boxes(self, key):
        raise KeyError(f"{self.where()}: {self.image_feature_type} features keep no box geometry")

    def get(self, key, dtype=np.float32):
        """float32 [N, D] rows of ``key``; ``dtype=None`` returns a packed store's on-disk dtype as is."""
        for p in self.packed:
            if key in p:
                if p.changed_since_packing(key, self.path(key)):
                    raise ValueError(f"{self.path(key)}: changed since it was packed into {p.directory} (size or "
                                     "mtime differ), so the store would serve old features; pack again, or remove "
                                     "the store to read the per-image files")
                return p.get(key, self.max_regions, dtype)
        path = self.path(key)
        arr = read_feature_file(path, key)
        if self._dim is not None and arr.shape[1] != self._dim:
            source = self._dim_source or (self.packed[0].directory if self.packed else None)
            raise ValueError(f"{path}: feature dim {arr.shape[1]}, but {source} has {self._dim} (the dimension the run "
                             f"took for {self.image_feature_type}); one of the two files is not like the others")
        if self.max_regions is not None:
            arr = arr[: self.max_regions]
        return arr if dtype is None else arr.astype(dtype, copy=False)


def _find_packed(root):
    packed_root = os.path.join(root, "packed")
    if not os.path.isdir(packed_root):
        return []
    return [os.path.join(packed_root, e.name) for e in sorted(os.scandir(packed_root), key=lambda e: e.name)
            if e.is_dir() and not e.name.endswith(".partial") and os.path.exists(os.path.join(packed_root, e.name, "meta.json"))]


def open_features(image_feature_type, input_dir, split=None, max_regions=None, packed_dirs=None, use_packed=True):
    """Open the features of ``image_feature_type`` under ``input_dir`` (a packed store if one exists).

    ``split`` restricts ``keys()`` to one split directory (``get`` works for any key).
    ``packed_dirs`` names packed stores outside the default ``<root>/packed/`` location.
    """
    return FeatureStore(image_feature_type, input_dir, split=split, max_regions=max_regions,
                        packed_dirs=packed_dirs, use_packed=use_packed)


def open_feature_dir(directory, max_regions=None):
    """The packed store a script's ``--features DIR`` names (see :class:`DirectoryFeatures`)."""
    return DirectoryFeatures(os.fspath(directory), max_regions=max_regions)


def check_feature_dim(store, expected):
    """Raise one clear line when the features do not match the model's ``visual_embedding_dim``."""
    if store.dim != int(expected):
        raise ValueError(f"{store.where()}: {store.image_feature_type} features have dim {store.dim}, but the model's "
                         f"visual_embedding_dim is {expected}")


def default_pack_dir(image_feature_type, input_dir, split=None):
    return os.path.join(get_layout(image_feature_type).root_dir(input_dir), "packed", split or "all")
