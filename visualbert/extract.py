"""Region features from your own images: ``python -m visualbert.extract``.

Every ``.jpg`` / ``.jpeg`` / ``.png`` under ``--image_dir`` (recursively, following linked folders) becomes
one entry of a packed feature store (:class:`visualbert.features.PackWriter`) at ``--output_dir``, keyed by its
path relative to the image directory without the extension (``shapes/0001.png`` -> ``shapes/0001``),
which every training and prediction script reads through ``--features``.

Images are resized to ``--image_size`` x ``--image_size`` (aspect ratio not kept, so a batch is one
tensor) and normalised with the ImageNet mean and standard deviation. Regions are:

- ``--grid N`` (the default): the backbone's last feature map average-pooled to N x N cells, one
  region per cell, as in "In Defense of Grid Features for VQA" (Jiang et al., 2020). Without
  ``--grid`` the map is used at its own resolution (``--image_size`` / 32 cells a side for ResNets).
- ``--boxes FILE``: a JSON object ``{key: [[x1, y1, x2, y2], ...]}`` in the original image's pixels,
  e.g. from any detector; each box is ROI-Aligned on the feature map and averaged.

Backbones: ``resnet50`` / ``resnet101`` / ``resnet152`` (paddle.vision, 2048-d; ``--weights
imagenet`` downloads Paddle's ImageNet weights on first use, ``none`` keeps a random initialisation,
a ``.pdparams`` file is read with the restricted unpickler), and ``patches``: no network at all, each
cell's pixels resampled to ``--patch_size`` x ``--patch_size`` and flattened (8 x 8 x 3 = 192-d),
for small images and offline use; with ``--boxes`` each box's pixels are resampled the same way.
``patches_hog`` appends to each region's pixels a 12-bin histogram of its gradient orientations
(:mod:`visualbert.orientation`): the shape of what the region holds, which raw pixels give a
linear projection no hold on (16 x 16 x 3 + 12 = 780-d at ``--patch_size 16``).

Beside the features the store keeps each region's geometry (``PackedStore.extra("boxes", key)``):
normalised x1, y1, x2, y2, width, height. Decoding runs in ``--num_workers`` processes ahead of
the backbone. The store is written as ``<output_dir>.partial/`` and renamed when complete, so a
killed run leaves nothing that looks finished, and rerunning the same command resumes it.
An unreadable image stops the run with one line naming it (nothing is published); with
``--skip_bad_images`` it is left out, named on stderr and listed in ``skipped_images.txt``.
"""
import argparse
import collections
import itertools
import multiprocessing
import os
import sys
import warnings

import numpy as np

from . import provenance, quiet
from .argtypes import non_negative_int, positive_int
from .errors import run_command
from .features import IMAGE_EXTENSIONS, PackWriter, PackedStore, walk_files
from .geometry import GEOMETRY_DIM, box_geometry, check_pixel_boxes, grid_geometry
from .formats.common import read_json
from .lifetime import init_worker
from .orientation import ORIENTATION_BINS, normalise_histograms, orientation_maps
from .progress import Progress
from .safeload import load_paddle

__all__ = ["BACKBONES", "list_images", "load_boxes", "decode_image", "resize_image", "image_features", "Backbone", "extract",
           "main"]

BACKBONES = ("resnet152", "resnet101", "resnet50", "patches", "patches_hog")
PATCH_BACKBONES = ("patches", "patches_hog")
RESNET_STRIDE = 32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SKIPPED_FILE = "skipped_images.txt"
# ResNets: 14 x 14 cells, the grid-features paper's scale; patches: 8 x 8 cells of 8 x 8 pixels.
DEFAULT_IMAGE_SIZE = {"resnet": 448, "patches": 64}


def list_images(image_dir):
    """[(key, path)] of every image under ``image_dir``, sorted by key; keys use ``/`` on every OS."""
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{image_dir}: --image_dir not found")
    found = {}

    def say_loop(path, target):
        print(f"note: {path}: left out, a link back to {target}, which holds it (a loop)", file=sys.stderr)

    for root, files in walk_files(image_dir, on_loop=say_loop):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(root, name)
            key = os.path.relpath(os.path.join(root, stem), image_dir).replace(os.sep, "/")
            if key in found:
                raise ValueError(f"{path}: same key '{key}' as {found[key]} (keys drop the extension; rename one)")
            found[key] = path
    if not found:
        raise FileNotFoundError(f"{image_dir}: no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images found")
    return sorted(found.items())


def load_boxes(path, keys):
    """``{key: float32 [n, 4]}`` from a boxes JSON, checked; every key of ``keys`` needs boxes."""
    data = read_json(path, '--boxes, a JSON object {"key": [[x1, y1, x2, y2], ...]}')
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object {{"key": [[x1, y1, x2, y2], ...]}}, found {type(data).__name__}')
    boxes = {}
    for key, value in data.items():
        boxes[key] = check_pixel_boxes(value, what=f"{path}: boxes of '{key}'")
    missing = [k for k in keys if k not in boxes]
    if missing:
        raise ValueError(f"{path}: no boxes for image '{missing[0]}' ({len(missing)} of {len(keys)} images have none)")
    return boxes


def decode_image(path, size):
    """(uint8 [size, size, 3], (width, height), None) or (None, None, why) for an unreadable file.

    An image of more than PIL's ``MAX_IMAGE_PIXELS`` (89 million) is refused from its header, before
    decoding: a 17 KB PNG can claim 12000 x 12000 pixels and take gigabytes to decode (PIL itself only
    warns below twice its limit).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size check below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            width, height = im.size
            if width * height > Image.MAX_IMAGE_PIXELS:
                return None, None, (f"{width} x {height} pixels, more than the {Image.MAX_IMAGE_PIXELS:,} this reads "
                                    "(a decompression bomb?); scale it down first")
            pixels, (width, height) = resize_image(im, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, None, f"{type(e).__name__}: {e}"
    return pixels, (width, height), None


def resize_image(im, size):
    """(uint8 [size, size, 3], (width, height)) of a PIL image: what the backbone sees of it."""
    from PIL import Image

    im = im.convert("RGB")
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8), im.size


def _decoded(paths, size, num_workers, ahead):
    """decode_image over ``paths`` in order, ``num_workers`` processes at most ``ahead`` images ahead."""
    if num_workers <= 0:
        for p in paths:
            yield decode_image(p, size)
        return
    # spawn, not fork: the parent runs Paddle's threads, which a forked child must not inherit.
    # Leaving the block (done, an error, Ctrl-C) terminates the workers; see lifetime for the rest.
    with multiprocessing.get_context("spawn").Pool(num_workers, initializer=init_worker,
                                                   initargs=(os.getpid(),)) as pool:
        it = iter(paths)
        pending = collections.deque(pool.apply_async(decode_image, (p, size)) for p in itertools.islice(it, ahead))
        while pending:
            result = pending.popleft().get()
            for p in itertools.islice(it, 1):
                pending.append(pool.apply_async(decode_image, (p, size)))
            yield result


def _load_weights(path):
    """A .pdparams state dict, read as every .pdparams is (a downloaded file must not run code)."""
    try:
        state = load_paddle(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: --weights file not found") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a .pdparams state dict, found {type(state).__name__}")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


class Backbone:
    """Image batch -> feature map, and how a region of that map becomes one feature vector.

    ``cell`` is the side, in map positions, each region is resampled to before flattening: 1 for
    the ResNets (a region is the mean of its 2048-d map), ``patch_size`` for ``patches`` (whose
    "map" is the normalised image itself, stride 1). ``bins``: orientation histogram values after
    each region's pixels (``patches_hog``), 0 for the others.
    """

    def __init__(self, name, weights, patch_size):
        import paddle

        self.name = name
        self.bins = ORIENTATION_BINS if name == "patches_hog" else 0
        if name in PATCH_BACKBONES:
            if weights not in (None, "none"):
                raise ValueError(f"--backbone {name} takes no --weights (it has no parameters)")
            self.net, self.stride, self.cell = None, 1, int(patch_size)
            return
        from paddle.vision import models

        weights = weights or "imagenet"
        build = getattr(models, name)
        paddle.seed(0)  # --weights none: the same random network on every run, so a resumed store stays consistent
        try:
            self.net = build(pretrained=weights == "imagenet", num_classes=0, with_pool=False)
        except Exception as e:  # no network, a proxy, a truncated download: each its own type, all mean "no weights"
            if weights != "imagenet":
                raise
            raise OSError(f"--weights imagenet: downloading Paddle's ImageNet {name} weights failed ({type(e).__name__}: "
                          f"{' '.join(str(e).split())}); without network pass --weights FILE.pdparams (a copy of those weights), --weights none "
                          "(random, for trying the pipeline) or --backbone patches (no weights at all)") from None
        if weights not in ("imagenet", "none"):
            state = _load_weights(weights)
            own = self.net.state_dict()
            missing = [k for k in own if k not in state]
            if missing:
                raise ValueError(f"{weights}: not {name} weights (no '{missing[0]}', {len(missing)} parameters missing)")
            wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
            if wrong:
                raise ValueError(f"{weights}: '{wrong[0]}' has shape {tuple(state[wrong[0]].shape)}, {name} needs "
                                 f"{tuple(own[wrong[0]].shape)}")
            self.net.set_state_dict({k: state[k] for k in own})
        self.net.eval()
        self.stride, self.cell = RESNET_STRIDE, 1

    def feature_map(self, x):
        return x if self.net is None else self.net(x)

    def grid(self, fmap, n):
        """[B, n * n, cell * cell * C (+ bins)]: the map average-pooled to n x n cells, row by row."""
        import paddle
        import paddle.nn.functional as F

        b, c = fmap.shape[0], fmap.shape[1]
        k = self.cell
        pooled = F.adaptive_avg_pool2d(fmap, n * k).reshape([b, c, n, k, n, k])
        feats = pooled.transpose([0, 2, 4, 3, 5, 1]).reshape([b, n * n, k * k * c])
        if not self.bins:
            return feats
        # histograms of the full-resolution image, not of the resampled patch: small shapes keep their edges
        hist = F.adaptive_avg_pool2d(orientation_maps(fmap, self.bins), n).transpose([0, 2, 3, 1])
        return paddle.concat([feats, normalise_histograms(hist.reshape([b, n * n, self.bins]))], axis=-1)

    def boxes(self, fmap, boxes):
        """[sum n_i, cell * cell * C (+ bins)] for per-image boxes given in pixels of the resized image."""
        import paddle
        from paddle.vision.ops import roi_align

        k, c = self.cell, fmap.shape[1]
        rois = paddle.to_tensor(np.concatenate(boxes).astype(np.float32))
        num = paddle.to_tensor(np.array([len(b) for b in boxes], dtype=np.int32))
        out = roi_align(fmap, rois, num, output_size=k, spatial_scale=1.0 / self.stride, aligned=True)
        feats = out.transpose([0, 2, 3, 1]).reshape([-1, k * k * c])
        if not self.bins:
            return feats
        maps = roi_align(orientation_maps(fmap, self.bins), rois, num, output_size=k, spatial_scale=1.0 / self.stride,
                         aligned=True)
        return paddle.concat([feats, normalise_histograms(maps.mean(axis=[2, 3]))], axis=-1)


def _check_boxes_inside(image_boxes, width, height, image_path, boxes_file):
    """Refuse a box with no pixel inside its image: ROI-Align would make it a region of zeros (or of
    the border's pixels), which trains and predicts as if it were real."""
    x1, y1, x2, y2 = image_boxes.T
    outside = (x1 >= width) | (y1 >= height) | (x2 <= 0) | (y2 <= 0)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{image_path}: box {i} {image_boxes[i].tolist()} of {boxes_file} lies entirely outside the "
                         f"{width} x {height} image (boxes are in the original image's pixels)")


def image_features(net, pixels, sizes, grid=None, boxes=None, use_amp=False):
    """Features of a batch of resized images (uint8 [B, S, S, 3]; ``sizes`` their original (width,
    height)): ([float32 [n_i, D]], [geometry [n_i, 6]]), regions = ``grid`` cells or the pixel ``boxes``
    of each image. ``extract`` and everything that re-makes features for a new image call this."""
    import paddle

    image_size = pixels.shape[1]
    x = paddle.to_tensor(pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
    x = (x - paddle.to_tensor(IMAGENET_MEAN.reshape(1, 3, 1, 1))) / paddle.to_tensor(IMAGENET_STD.reshape(1, 3, 1, 1))
    with paddle.no_grad(), paddle.amp.auto_cast(enable=use_amp):
        fmap = net.feature_map(x).astype("float32")  # pooling and ROI-Align in float32 under AMP too
        if boxes is None:
            feats = net.grid(fmap, grid).astype("float32").numpy()
            return list(feats), [grid_geometry(grid)] * len(pixels)
        scaled = [b * np.array([image_size / w, image_size / h] * 2, dtype=np.float32) for b, (w, h) in zip(boxes, sizes)]
        feats = net.boxes(fmap, scaled).astype("float32").numpy()
    per_image = np.split(feats, np.cumsum([len(s) for s in scaled])[:-1])
    return per_image, [box_geometry(b, w, h) for b, (w, h) in zip(boxes, sizes)]


def extract(image_dir, output_dir, backbone="resnet152", weights=None, grid=None, boxes=None, image_size=None,
            patch_size=8, batch_size=16, num_workers=2, device="auto", use_amp=False, skip_bad_images=False,
            dtype="float16", progress=True, log=None):
    """Write the packed store of every image under ``image_dir``; returns (output_dir, skipped [(path, why)])."""
    import paddle

    log = log or (lambda line: print(line, file=sys.stderr))
    if backbone not in BACKBONES:
        raise ValueError(f"unknown --backbone '{backbone}' (expected one of: {', '.join(BACKBONES)})")
    if image_size is None:
        image_size = DEFAULT_IMAGE_SIZE["patches" if backbone in PATCH_BACKBONES else "resnet"]
    for flag, value in (("--image_size", image_size), ("--patch_size", patch_size), ("--batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if grid is not None and boxes is not None:
        raise ValueError("--grid and --boxes exclude each other (regions are either grid cells or the given boxes)")
    if grid is not None and int(grid) < 1:
        raise ValueError(f"--grid must be >= 1, got {grid}")
    if os.path.exists(output_dir):
        raise FileExistsError(f"{output_dir}: already exists; remove it or pick another --output_dir")
    images = list_images(image_dir)
    box_table = load_boxes(boxes, [k for k, _ in images]) if boxes else None

    if device == "auto":
        device = "gpu" if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else "cpu"
    paddle.set_device(device)
    if use_amp and device != "gpu":
        log("note: AMP needs a GPU; extracting in float32")
        use_amp = False
    net = Backbone(backbone, weights, patch_size)
    if grid is None and box_table is None:
        grid = image_size // patch_size if backbone in PATCH_BACKBONES else -(-image_size // RESNET_STRIDE)
        if grid < 1:
            raise ValueError(f"--image_size {image_size} is smaller than one --patch_size {patch_size} patch")

    settings = {"backbone": backbone, "weights": weights or ("none" if backbone in PATCH_BACKBONES else "imagenet"),
                "grid": grid, "image_size": int(image_size), "patch_size": int(patch_size) if backbone in PATCH_BACKBONES else None,
                "boxes": os.path.abspath(boxes) if boxes else None}
    params = dict(settings, image_dir=os.path.abspath(image_dir))
    if boxes:
        params["boxes_sha1"] = provenance.file_digest(boxes, "sha1")
    if settings["weights"] not in ("none", "imagenet"):
        params["weights_sha1"] = provenance.file_digest(settings["weights"], "sha1")
    skipped = []

    with PackWriter(output_dir, params, dtype=dtype, extras={"boxes": GEOMETRY_DIM}) as writer:
        todo = [(k, p) for k, p in images if k not in writer.done]
        if len(todo) < len(images):
            log(f"resuming: {len(images) - len(todo)} of {len(images)} images already extracted")
        bar = Progress(f"extract {backbone}", "img", len(images), initial=len(images) - len(todo), enabled=progress)

        def run(batch):
            if box_table is not None:
                for key, path, _, (w, h) in batch:
                    _check_boxes_inside(box_table[key], w, h, path, boxes)
            per_image, geometry = image_features(
                net, np.stack([b[2] for b in batch]), [b[3] for b in batch], grid=grid,
                boxes=None if box_table is None else [box_table[key] for key, _, _, _ in batch], use_amp=use_amp)
            for (key, path, _, _), rows, geom in zip(batch, per_image, geometry):
                writer.add(key, rows, where=path, boxes=geom)
            bar.tick(len(batch))

        batch = []
        ahead = max(2 * batch_size, 4 * num_workers)
        decoded = _decoded([p for _, p in todo], image_size, num_workers, ahead)
        try:
            for (key, path), (pixels, size, why) in zip(todo, decoded):
                if why is not None:
                    if not skip_bad_images:
                        raise ValueError(f"{path}: cannot read image ({why}); nothing was published; rerun with "
                                         "--skip_bad_images to leave it out")
                    log(f"skipped: {path}: cannot read image ({why})")
                    skipped.append((path, why))
                    bar.tick()
                    continue
                batch.append((key, path, pixels, size))
                if len(batch) == batch_size:
                    run(batch)
                    batch = []
            if batch:
                run(batch)
            bar.finish()
        finally:
            decoded.close()  # stops the decoding workers now, not when the generator is collected
            bar.close()  # before any error line, so the bar does not print itself after it
        if skipped:
            with open(os.path.join(writer.partial, SKIPPED_FILE), "w", encoding="utf-8") as f:
                f.writelines(f"{path}\t{why}\n" for path, why in skipped)
        record = provenance.extracted(backbone, settings["weights"], image_size, grid, settings["patch_size"], boxes, dtype)
        out = writer.finish({"extracted": settings, "provenance": record, "skipped_images": len(skipped)})
    return out, skipped


def build_parser():

    p = argparse.ArgumentParser(prog="python -m visualbert.extract", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_dir", required=True, help="folder of .jpg/.jpeg/.png images, read recursively")
    p.add_argument("--output_dir", required=True,
                   help="the packed store to write (pass it to the training scripts as --features); keys are the "
                        "image paths relative to --image_dir without extension")
    p.add_argument("--backbone", default="resnet152", choices=BACKBONES,
                   help="paddle.vision ResNet (2048-d regions), patches (raw pixels, no weights) or patches_hog "
                        "(raw pixels and a histogram of edge orientations: shapes, no weights)")
    p.add_argument("--weights", default=None,
                   help="ResNets: imagenet (Paddle's pretrained weights, downloaded once; the default), none (random "
                        "initialisation, for tests) or a .pdparams file")
    p.add_argument("--grid", type=positive_int, default=None,
                   help="pool the last feature map to N x N cells, one region each (default: the map as it is, "
                        "--image_size/32 a side for ResNets, --image_size/--patch_size for patches)")
    p.add_argument("--boxes", default=None, metavar="FILE.json",
                   help='regions from boxes instead of a grid: {"key": [[x1, y1, x2, y2], ...]} in image pixels, '
                        "ROI-Aligned on the feature map")
    p.add_argument("--image_size", type=positive_int, default=None,
                   help="images are resized to this square (default 448 for ResNets, 64 for patches)")
    p.add_argument("--patch_size", type=positive_int, default=8,
                   help="patches, patches_hog: each region's pixels are resampled to P x P, giving P*P*3-d features "
                        "(+12 for patches_hog; default 8)")
    p.add_argument("--batch_size", type=positive_int, default=16, help="images per backbone call")
    p.add_argument("--num_workers", type=non_negative_int, default=2, help="processes decoding images ahead of the backbone (0: inline)")
    p.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    p.add_argument("--use_amp", action="store_true", help="mixed precision backbone (GPU only)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="on-disk dtype of the features")
    p.add_argument("--skip_bad_images", action="store_true",
                   help="leave out unreadable images (named on stderr, listed in <output_dir>/skipped_images.txt) "
                        "instead of stopping")
    return p


def main(argv=None):
    quiet.silence()  # before paddle is imported: a command prints only what it has to say
    args = build_parser().parse_args(argv)
    partial = os.path.abspath(args.output_dir) + ".partial"

    def resumable():
        return f"{partial} is kept: rerun the same command to resume" if os.path.isdir(partial) else None

    def work():
        out, skipped = extract(args.image_dir, args.output_dir, backbone=args.backbone, weights=args.weights,
                               grid=args.grid, boxes=args.boxes, image_size=args.image_size,
                               patch_size=args.patch_size, batch_size=args.batch_size,
                               num_workers=args.num_workers, device=args.device, use_amp=args.use_amp,
                               skip_bad_images=args.skip_bad_images, dtype=args.dtype)
        meta = PackedStore(out).meta
        print(f"extracted {meta['num_images']} images, {meta['num_rows']} regions x {meta['dim']} ({meta['dtype']}) "
              f"into {out}" + (f"; skipped {len(skipped)} unreadable (listed in {os.path.join(out, SKIPPED_FILE)})"
                               if skipped else ""))

    return run_command(work, after=resumable)


if __name__ == "__main__":
    sys.exit(main())
