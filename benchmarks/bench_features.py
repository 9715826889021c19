"""Input-pipeline throughput: per-image .npy files vs the packed store, side by side, cold page cache.

VQA-shaped samples (100 x 2048 regions + a question, VQADataset with soft targets) through a
paddle DataLoader (batch 64, 2 workers): per-image float32 .npy files, the fp16 packed store
delivered as float32, and the packed store delivered as fp16 (``visual_dtype="float16"``; the
trainer casts on the device). Before each measured pass every feature file is dropped
from the page cache with posix_fadvise(DONTNEED), so both sources are read from disk.

    python benchmarks/bench_features.py --workdir /tmp/bench_features [--num_images 3000] [--passes 2]

Writes the synthetic features once (kept in --workdir for reruns), packs them, then prints one
line per source and pass and a JSON summary.
"""
import argparse
import json
import os
import platform
import shutil
import time

import numpy as np

from visualbert.features import FEATURE_TYPES, default_pack_dir, open_features, pack_features

ROWS, DIM, BATCH, WORKERS = 100, 2048, 64, 2
FEATURE_TYPE = "coco_detectron_fix_100"


def make_data(workdir, num_images):
    layout = FEATURE_TYPES[FEATURE_TYPE]
    directory = layout.directory(workdir, "train2014")
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(num_images):
        key = f"COCO_train2014_{i + 1:012d}"
        path = os.path.join(directory, key + ".npy")
        if not os.path.exists(path):
            np.save(path, rng.random((ROWS, DIM), dtype=np.float32))
        examples.append({"image_key": key, "image_id": i + 1, "question_id": (i + 1) * 1000,
                         "question_str": "what color is the umbrella the woman is holding?",
                         "answers": ["red"] * 7 + ["pink"] * 3})
    packed_dir = default_pack_dir(FEATURE_TYPE, workdir)
    if os.path.isdir(packed_dir) and len(open_features(FEATURE_TYPE, workdir).packed[0]) != num_images:
        shutil.rmtree(packed_dir)  # left by a run with another --num_images
    if not os.path.isdir(packed_dir):
        pack_features(FEATURE_TYPE, workdir)
    return examples


def drop_cache(paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_fraction(path):
    """Share of a file's pages in the page cache (mincore on a mapping), to show the cache is cold."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        anchor = ctypes.c_char.from_buffer(mm)
        vec = (ctypes.c_ubyte * pages)()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vec)
        del anchor
        mm.close()
    return sum(v & 1 for v in vec) / pages if rc == 0 else float("nan")


def run(examples, store, tokenizer, vocab, visual_dtype):
    import paddle

    from visualbert.inputs import VQADataset

    dataset = VQADataset(examples, tokenizer, store, vocab, max_seq_length=32, visual_dtype=visual_dtype)
    loader = paddle.io.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                                  collate_fn=dataset.collate_fn(), drop_last=False)
    start = time.perf_counter()
    samples = 0
    first = first_size = None
    for batch in loader:
        if first is None:
            first, first_size = time.perf_counter() - start, batch["visual_embeds"].shape[0]
        samples += batch["visual_embeds"].shape[0]
    elapsed = time.perf_counter() - start
    # Steady state leaves out worker start-up (fork, first reads), which a long epoch amortises.
    steady = (samples - first_size) / (elapsed - first)
    return samples, elapsed, first, steady


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/bench_features", help="where the synthetic features live (kept for reruns)")
    parser.add_argument("--num_images", type=int, default=3000, help="images (= samples per pass)")
    parser.add_argument("--passes", type=int, default=2, help="measured passes per source, alternating")
    args = parser.parse_args()

    from visualbert.formats.vqa import read_answer_vocab
    from visualbert.inputs import get_tokenizer

    examples = make_data(args.workdir, args.num_images)
    keys = [ex["image_key"] for ex in examples]
    per_image = open_features(FEATURE_TYPE, args.workdir, use_packed=False)
    packed = open_features(FEATURE_TYPE, args.workdir)
    files = [per_image.path(k) for k in keys]
    bin_path = os.path.join(packed.packed[0].directory, "features.bin")
    tokenizer, vocab = get_tokenizer(), read_answer_vocab()
    sources = (("per_image_npy", per_image, files, "float32"), ("packed_fp16_as_fp32", packed, [bin_path], "float32"),
               ("packed_fp16_as_fp16", packed, [bin_path], "float16"))
    results = {name: [] for name, *_ in sources}
    steady_rates = {name: [] for name, *_ in sources}
    for p in range(args.passes):
        for name, store, paths, visual_dtype in sources:
            drop_cache(files + [bin_path])
            cold = cached_fraction(paths[0])
            samples, elapsed, first, steady = run(examples, store, tokenizer, vocab, visual_dtype)
            rate = samples / elapsed
            results[name].append(rate)
            steady_rates[name].append(steady)
            print(f"pass {p} {name:20s} {samples} samples in {elapsed:.2f} s = {rate:,.0f} samples/s, "
                  f"{steady:,.0f}/s after the first batch ({first:.2f} s); {cold:.0%} of its first file cached before",
                  flush=True)
    on_disk = {"per_image_npy_bytes": sum(os.path.getsize(f) for f in files), "packed_fp16_bytes": os.path.getsize(bin_path)}
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
        "samples_per_pass": len(examples), "batch_size": BATCH, "num_workers": WORKERS, "regions": ROWS, "dim": DIM,
        "samples_per_s": {k: round(float(np.median(v))) for k, v in results.items()},
        "steady_samples_per_s": {k: round(float(np.median(v))) for k, v in steady_rates.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        **on_disk,
    }
    summary["speedup_vs_per_image"] = {k: round(v / summary["samples_per_s"]["per_image_npy"], 2)
                                       for k, v in summary["samples_per_s"].items() if k != "per_image_npy"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
