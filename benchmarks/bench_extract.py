"""Feature extraction throughput (``python -m visualbert.extract``): images/s on this machine.

Writes ``--num_images`` JPEGs of 640 x 480 (COCO's typical size; noise plus shapes, so decoding
costs what a photo costs) once into ``--workdir``, then extracts them with each backbone and each
worker count into a fresh store and reports images/s over the whole run (decoding, resizing,
backbone, writing, and building the backbone, about a second for resnet50).

    python benchmarks/bench_extract.py --workdir /tmp/bench_extract [--num_images 128] \
        [--backbones patches resnet50] [--workers 0 2] [--image_size 224] [--batch_size 16]

ResNets use ``--weights none`` (same cost as ImageNet weights, no download). Prints one line per
setting and a JSON summary.
"""
import argparse
import json
import os
import platform
import shutil
import time

import numpy as np

from visualbert import extract as E


def make_images(directory, count):
    from PIL import Image, ImageDraw

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = os.path.join(directory, f"{i:06d}.jpg")
        if os.path.exists(path):
            continue
        im = Image.fromarray(rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(5):
            x, y = rng.integers(0, 560), rng.integers(0, 400)
            draw.ellipse([int(x), int(y), int(x) + 80, int(y) + 80], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        im.save(path, quality=90)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--num_images", type=int, default=128)
    p.add_argument("--backbones", nargs="+", default=["patches", "resnet50"], choices=E.BACKBONES)
    p.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=16)
    args = p.parse_args()
    images = os.path.join(args.workdir, "images")
    make_images(images, args.num_images)
    results = []
    for backbone in args.backbones:
        for workers in args.workers:
            out = os.path.join(args.workdir, f"feats-{backbone}-{workers}")
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(out + ".partial", ignore_errors=True)
            E.Backbone(backbone, None if backbone == "patches" else "none", 8)  # warm: first model build, imports
            start = time.perf_counter()
            E.extract(images, out, backbone=backbone, weights=None if backbone == "patches" else "none",
                      image_size=args.image_size, batch_size=args.batch_size, num_workers=workers, device="cpu",
                      progress=False)
            seconds = time.perf_counter() - start
            rate = args.num_images / seconds
            results.append({"backbone": backbone, "num_workers": workers, "images_per_second": round(rate, 2),
                            "seconds": round(seconds, 2)})
            print(f"{backbone:10s} workers {workers}: {rate:8.2f} images/s ({seconds:.1f} s for {args.num_images})", flush=True)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "image_size": args.image_size,
                      "batch_size": args.batch_size, "num_images": args.num_images, "results": results}))


if __name__ == "__main__":
    main()
