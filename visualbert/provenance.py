"""How a feature store's features were made, and what a trained model needs its inputs made with.

A model answers well only on features made exactly as in training. So every store written by
``visualbert.extract`` or ``visualbert.features import`` records its provenance in ``meta.json``
(``"provenance"``), a training run copies the provenance of the store it read into
``run_config.json`` (``feature_provenance``) and into the config of every model it saves
(``best/``, ``model/``, ``checkpoint-*``), and ``ask`` / ``serve`` / the pipeline read it back to
make the features of a new image the same way.

A provenance is a JSON object:

- ``extractor``: ``visualbert.extract`` (re-makeable from an image), ``import`` (a public release,
  e.g. bottom-up-attention TSV), ``detectron`` (the original per-image ``.npy`` layouts) or
  ``unknown`` (a store written before provenance was recorded, without the settings to tell);
- for ``visualbert.extract``: ``backbone``, ``weights`` (``imagenet``, ``none`` or
  ``sha256:<hex>`` of the ``.pdparams`` file, whose path is kept in ``weights_file``),
  ``image_size``, ``grid``, ``patch_size`` (patches only), ``boxes`` (``grid`` or ``given``: the
  regions came from a boxes file, which a new image does not have);
- ``dtype`` (on-disk dtype: fp16 rounding is part of what the model saw), ``project_version``;
- ``reproducible``: whether the features of a new raw image can be made again, and ``why`` not.
"""
import hashlib
import json
import os

__all__ = ["PROVENANCE_KEY", "extracted", "imported", "detectron", "of_store", "of_model", "reproducible",
           "describe", "file_digest", "file_sha256"]

PROVENANCE_KEY = "feature_provenance"
EXTRACTOR = "visualbert.extract"


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes (read 1 MiB at a time, so a weights file is never held whole)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path):
    return file_digest(path, "sha256")


def _version():
    from . import __version__

    return __version__


def extracted(backbone, weights, image_size, grid, patch_size, boxes, dtype):
    """The provenance of a store ``visualbert.extract`` writes with these settings."""
    record = {"extractor": EXTRACTOR, "backbone": backbone, "weights": weights, "image_size": int(image_size),
              "grid": None if grid is None else int(grid), "patch_size": None if patch_size is None else int(patch_size),
              "boxes": "given" if boxes else "grid", "dtype": str(dtype), "project_version": _version()}
    if weights not in ("imagenet", "none"):
        record["weights"] = "sha256:" + file_sha256(weights)
        record["weights_file"] = os.path.abspath(weights)
    if boxes:
        record["boxes_file"] = os.path.abspath(boxes)
        record["reproducible"] = False
        record["why"] = ("its regions are boxes from a file (e.g. a detector's); give the new image's boxes with "
                         "--boxes")
    else:
        record["reproducible"] = True
    return record


def imported(fmt, sources, dtype):
    """The provenance of a store ``visualbert.features import`` writes: a release's own extractor."""
    return {"extractor": "import", "format": fmt, "sources": [os.path.abspath(s) for s in sources],
            "dtype": str(dtype), "project_version": _version(), "reproducible": False,
            "why": f"imported {fmt} features come from the release's own detector, which this project does not have"}


def detectron(image_feature_type):
    """The original release's per-image ``.npy`` features (and stores packed from them)."""
    return {"extractor": "detectron", "image_feature_type": image_feature_type, "project_version": _version(),
            "reproducible": False,
            "why": f"{image_feature_type} features come from the original Detectron model, which this project does "
                   "not have"}


def _from_meta(meta):
    """A packed store's provenance; stores written before it was recorded are described from their settings."""
    if "provenance" in meta:
        return dict(meta["provenance"])
    settings = meta.get("extracted")
    if settings:  # an extract store from before provenance: its settings say enough, except a weights file's hash
        weights = settings.get("weights") or "imagenet"
        record = {"extractor": EXTRACTOR, "backbone": settings.get("backbone"), "weights": weights,
                  "image_size": settings.get("image_size"), "grid": settings.get("grid"),
                  "patch_size": settings.get("patch_size"), "boxes": "given" if settings.get("boxes") else "grid",
                  "dtype": meta.get("dtype"), "project_version": None, "reproducible": not settings.get("boxes")}
        if weights not in ("imagenet", "none"):
            record["weights_file"] = weights
        if settings.get("boxes"):
            record["why"] = "its regions are boxes from a file; give the new image's boxes with --boxes"
        return record
    if meta.get("imported"):
        return imported(meta["imported"].get("format"), meta["imported"].get("sources") or [], meta.get("dtype"))
    if meta.get("image_feature_type"):
        return dict(detectron(meta["image_feature_type"]), dtype=meta.get("dtype"))
    return {"extractor": "unknown", "dtype": meta.get("dtype"), "reproducible": False,
            "why": "the store does not record how its features were made"}


def of_store(features):
    """The provenance of what a script reads: a ``--features`` store, or a type's packed store / files."""
    directory_store = getattr(features, "store", None)
    if directory_store is not None:
        return _from_meta(directory_store.meta)
    record = detectron(features.image_feature_type)
    if features.packed:
        record["dtype"] = features.packed[0].meta.get("dtype")
    return record


def of_model(model_dir):
    """The provenance saved with a model (its config), else from the run's ``run_config.json``; None if neither."""
    model_dir = os.fspath(model_dir)
    for name in ("config.json", "model_config.json"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path) as f:
                found = json.load(f).get(PROVENANCE_KEY)
            if found:
                return found
    run_config = os.path.join(os.path.dirname(os.path.normpath(model_dir)), "run_config.json")
    if os.path.isfile(run_config):
        with open(run_config) as f:
            return json.load(f).get(PROVENANCE_KEY)
    return None


def reproducible(record):
    return bool(record and record.get("reproducible"))


def describe(record):
    """One phrase: how the features were made."""
    if not record:
        return "unknown features (the model records no feature provenance)"
    if record.get("extractor") == EXTRACTOR:
        where = (f"grid {record['grid']}x{record['grid']}" if record.get("boxes") == "grid" else "given boxes")
        patch = f", patch {record['patch_size']}" if record.get("patch_size") else ""
        return (f"visualbert.extract --backbone {record['backbone']} (weights {record['weights']}, image "
                f"{record['image_size']}, {where}{patch}, {record.get('dtype')})")
    if record.get("extractor") == "import":
        return f"imported {record.get('format')} features"
    if record.get("extractor") == "detectron":
        return f"Detectron features ({record.get('image_feature_type')})"
    return "features of unknown provenance"
