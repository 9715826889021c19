"""--backbone patches_hog: each region's pixels followed by a histogram of its edge orientations,
which tells a rectangle's edges (0 and 90 degrees) from a triangle's slanted ones and a circle's
spread, wherever the shape lies; flat regions keep a histogram near zero."""
import os

import numpy as np
from PIL import Image, ImageDraw

from visualbert import extract as E
from visualbert.features import PackedStore, open_feature_dir
from visualbert.orientation import ORIENTATION_BINS

SIZE = 32


def shape_image(path, shape, offset=0):
    im = Image.new("RGB", (SIZE, SIZE), (240, 240, 240))
    draw = ImageDraw.Draw(im)
    x, y = 4 + offset, 4 + offset
    if shape == "rectangle":
        draw.rectangle([x, y, x + 20, y + 14], fill=(200, 20, 20))
    elif shape == "triangle":
        draw.polygon([(x + 10, y), (x, y + 20), (x + 20, y + 20)], fill=(200, 20, 20))
    else:
        draw.ellipse([x, y, x + 20, y + 20], fill=(200, 20, 20))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path)


def whole_image_histograms(tmp_path, shapes, **kwargs):
    root = tmp_path / "images"
    for name, (shape, offset) in shapes.items():
        shape_image(str(root / f"{name}.png"), shape, offset)
    out, _ = E.extract(str(root), str(tmp_path / "feats"), backbone="patches_hog", image_size=SIZE, num_workers=0,
                       progress=False, **kwargs)
    return PackedStore(out)


def test_regions_end_with_a_histogram_that_tells_shapes_apart_and_pixels_stay_as_patches(tmp_path):
    shapes = {"rect": ("rectangle", 0), "rect_moved": ("rectangle", 4), "tri": ("triangle", 0), "circle": ("circle", 2)}
    store = whole_image_histograms(tmp_path, shapes, grid=1, patch_size=8)
    assert store.dim == 8 * 8 * 3 + ORIENTATION_BINS and store.rows("rect") == 1
    hist = {k: store.get(k)[0, 8 * 8 * 3:] for k in shapes}
    assert np.isclose(np.linalg.norm(hist["rect"]), np.sqrt(ORIENTATION_BINS), rtol=0.05)
    # a rectangle's gradients fall in the 0 and 90 degree bins (and their neighbours), a triangle's also in between
    axis_bins = [0, 1, ORIENTATION_BINS - 1, ORIENTATION_BINS // 2 - 1, ORIENTATION_BINS // 2, ORIENTATION_BINS // 2 + 1]
    share = {k: h[axis_bins].sum() / h.sum() for k, h in hist.items()}
    assert share["rect"] > 0.9 and share["tri"] < 0.75 and share["circle"] < 0.75
    # moved, the same shape keeps its histogram
    np.testing.assert_allclose(hist["rect_moved"], hist["rect"], atol=0.1 * np.abs(hist["rect"]).max())
    # the pixel part is what --backbone patches gives
    plain, _ = E.extract(str(tmp_path / "images"), str(tmp_path / "plain"), backbone="patches", grid=1, image_size=SIZE,
                         patch_size=8, num_workers=0, progress=False)
    np.testing.assert_allclose(store.get("tri")[0, :192], PackedStore(plain).get("tri")[0], atol=1e-2)


def test_flat_cells_have_near_zero_histograms_and_boxes_get_them_too(tmp_path):
    store = whole_image_histograms(tmp_path, {"rect": ("rectangle", 0)}, patch_size=8)  # 4 x 4 cells of 8 pixels
    hist = store.get("rect")[:, 8 * 8 * 3:]
    # the rectangle spans x 4..24, y 4..18: the bottom row of cells (y 24..32) is flat background
    assert np.abs(hist[12:]).max() < 0.05 and np.linalg.norm(hist[0]) > 1
    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"rect": [[0, 0, 32, 32], [0, 24, 32, 32]]}')
    boxed, _ = E.extract(str(tmp_path / "images"), str(tmp_path / "boxed"), backbone="patches_hog", boxes=str(boxes),
                         image_size=SIZE, patch_size=8, num_workers=0, progress=False)
    rows = PackedStore(boxed).get("rect")[:, 8 * 8 * 3:]
    assert np.linalg.norm(rows[0]) > 1 and np.abs(rows[1]).max() < 0.05


def test_a_model_on_a_patches_hog_store_remakes_the_same_features_from_a_raw_image(tmp_path):
    from visualbert import provenance
    from visualbert.pipelines import ImageFeaturizer

    store = whole_image_histograms(tmp_path, {"tri": ("triangle", 3)}, grid=2, patch_size=4)
    featurize = ImageFeaturizer(provenance.of_store(open_feature_dir(str(tmp_path / "feats"))))
    (feats, geometry), = featurize([Image.open(str(tmp_path / "images" / "tri.png"))])
    assert feats.shape == (4, 4 * 4 * 3 + ORIENTATION_BINS)
    np.testing.assert_allclose(feats, store.get("tri"), atol=1e-6)
    np.testing.assert_allclose(geometry, store.extra("boxes", "tri"))
