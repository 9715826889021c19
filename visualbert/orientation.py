"""Histograms of gradient orientation per region: the shape cue of ``--backbone patches_hog``.

A region's raw pixels (``--backbone patches``) tell its colour through a linear projection, but not
its outline: a circle, a rectangle and a triangle anywhere in the image share no pixel pattern a
linear map can read (on easy-VQA a linear classifier of the whole image's pixels names the shape
43% of the time, chance is 33%). The directions of its edges do: a rectangle's gradients point at
0 and 90 degrees, a triangle's also at +-60, a circle's everywhere. A histogram of those directions
over a region (as in HOG, Dalal and Triggs 2005, without its block layout) is linearly readable
(100% on the same images) and needs no weights and no network.

Each pixel's gradient is taken in the colour channel where it is strongest; its magnitude is split
between the two orientation bins (0 to 180 degrees, ``bins`` of them) nearest its direction. A
region's histogram is the mean over its pixels, scaled to length ``sqrt(bins)`` (about one per
value, like the normalised pixels beside it) where it has edges and left near zero where it is flat.
"""
import math

__all__ = ["ORIENTATION_BINS", "orientation_maps", "normalise_histograms"]

ORIENTATION_BINS = 12
# a region whose mean gradient is well below this (flat background) keeps a histogram near zero
# instead of its noise scaled up to full length
FLAT = 0.05


def orientation_maps(x, bins=ORIENTATION_BINS):
    """[B, bins, H, W]: each pixel's gradient magnitude in the orientation bins of its direction.

    ``x`` is the normalised image batch [B, C, H, W] (paddle). Central differences, edges replicated."""
    import paddle
    import paddle.nn.functional as F

    padded = F.pad(x, [1, 1, 1, 1], mode="replicate")
    gx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) / 2
    gy = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) / 2
    magnitude = paddle.sqrt(gx * gx + gy * gy)
    strongest = paddle.argmax(magnitude, axis=1, keepdim=True)
    gx = paddle.take_along_axis(gx, strongest, axis=1)
    gy = paddle.take_along_axis(gy, strongest, axis=1)
    magnitude = paddle.take_along_axis(magnitude, strongest, axis=1)
    # direction in [0, pi): opposite gradients (dark-to-light, light-to-dark) are the same edge
    position = paddle.remainder(paddle.atan2(gy, gx), paddle.to_tensor(math.pi)) * (bins / math.pi)
    centres = paddle.arange(bins, dtype=x.dtype).reshape([1, bins, 1, 1])
    distance = paddle.abs(position - centres)
    distance = paddle.minimum(distance, bins - distance)  # the bins wrap around at 180 degrees
    return F.relu(1 - distance) * magnitude


def normalise_histograms(hist):
    """[..., bins] mean histograms -> length about sqrt(bins) where a region has edges, near 0 where flat."""
    import paddle

    bins = hist.shape[-1]
    norm = paddle.sqrt((hist * hist).sum(axis=-1, keepdim=True) + FLAT * FLAT)
    return hist / norm * math.sqrt(bins)
