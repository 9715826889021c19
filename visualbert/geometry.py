"""Region geometry, as stores keep it beside the features: normalised x1, y1, x2, y2, width, height.

Regions come as pixel boxes (``extract --boxes``, a detector's output in an imported release, a box
given to a pipeline) or as grid cells (``extract --grid``). Each becomes the same six numbers here, so
a model sees one geometry whichever way its features were made.
"""
import numpy as np

__all__ = ["GEOMETRY_DIM", "check_pixel_boxes", "box_geometry", "grid_geometry", "check_geometry"]

GEOMETRY_DIM = 6  # x1, y1, x2, y2, w, h


def check_pixel_boxes(value, what):
    """float32 [n >= 1, 4] pixel boxes (x1, y1, x2, y2) from a nested list or array, each finite with
    x1 < x2 and y1 < y2; ``what`` says in the error whose boxes they are (``{path}: boxes of 'key'``)."""
    try:
        boxes = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        boxes = None
    if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty list of [x1, y1, x2, y2] in image pixels")
    bad = ~np.isfinite(boxes).all(1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: box {i} is not x1 < x2, y1 < y2: {boxes[i].tolist()}")
    return boxes


def box_geometry(boxes, width, height, where=None):
    """float32 [n, 6] geometry of pixel ``boxes`` [n, 4] in a ``width`` x ``height`` image, clipped to
    the image. Released boxes are taken as they are (only finite), so a degenerate one keeps width 0."""
    prefix = f"{where}: " if where else ""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{prefix}boxes have shape {tuple(boxes.shape)}, expected [N, 4]")
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise ValueError(f"{prefix}image size {width} x {height} is not a positive number")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{prefix}boxes hold NaN or infinite values")
    norm = np.clip(boxes / np.array([width, height, width, height], dtype=np.float32), 0.0, 1.0)
    return np.concatenate([norm, norm[:, 2:] - norm[:, :2]], 1).astype(np.float32)


def grid_geometry(n):
    """float32 [n * n, 6] geometry of an n x n grid's cells, row by row."""
    i, j = np.divmod(np.arange(n * n), n)
    return np.stack([j / n, i / n, (j + 1) / n, (i + 1) / n, np.full(n * n, 1 / n), np.full(n * n, 1 / n)], 1).astype(np.float32)


def check_geometry(geometry, rows, where, key=None):
    """``geometry`` as float32 [rows, GEOMETRY_DIM], every value finite: the one check of geometry
    read back from a store or taken as stored in a release. The error names ``where`` and the image ``key``."""
    geometry = np.asarray(geometry, dtype=np.float32)
    what = f" of image '{key}'" if key else ""
    if geometry.shape != (rows, GEOMETRY_DIM):
        raise ValueError(f"{where}: the box geometry{what} has shape {tuple(geometry.shape)}, expected ({rows}, "
                         f"{GEOMETRY_DIM}): normalised x1, y1, x2, y2, w, h of each region")
    if not np.isfinite(geometry).all():
        raise ValueError(f"{where}: the box geometry{what} contains NaN or Inf (extract or import the store again)")
    return geometry
