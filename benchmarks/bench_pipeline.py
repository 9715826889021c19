"""Does the input pipeline keep up? Samples/s the VQA loader delivers vs samples/s the train step eats.

    python benchmarks/bench_pipeline.py [--workdir /tmp/bench_pipeline] [--threads 2] [--steps 4]

1. Loader: ``VQADataset`` over VQA-shaped features (100 regions x 2048, written once into
   --workdir in the per-image layout of ``coco_detectron_fix_100`` and packed, as training reads
   them) + its collate_fn, through ``paddle.io.DataLoader(batch 32, 2 workers)``; warm page cache.
2. Model: our BERT-base ``VisualBertForQuestionAnswering`` train step (forward, backward,
   clip 1.0, AdamW) at batch 32 on batches taken from that loader, fed from memory.
3. Both together: the same steps fed live by the 2-worker loader, i.e. the workers competing with
   the step for the same cores, to show what the loader costs a real training loop.

Prints the three rates, loader / step (the target is >= 10x) and a JSON line.
"""
import argparse
import json
import os
import platform
import statistics
import time

BATCH, WORKERS, ROWS, DIM = 32, 2, 100, 2048
FEATURE_TYPE = "coco_detectron_fix_100"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/bench_pipeline", help="synthetic features (kept for reruns)")
    p.add_argument("--num_images", type=int, default=1024, help="images = samples per loader pass")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="paddle intra-op threads")
    p.add_argument("--steps", type=int, default=4, help="timed train steps per measurement (after one warm-up)")
    p.add_argument("--passes", type=int, default=2, help="timed loader passes (after one warm-up pass)")
    p.add_argument("--tiny", action="store_true", help="2-layer, 128-wide model: a smoke run")
    return p.parse_args(argv)


def loader_for(dataset):
    import paddle

    return paddle.io.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                                collate_fn=dataset.collate_fn(), drop_last=True)


def loader_rate(dataset):
    start, samples = time.perf_counter(), 0
    for batch in loader_for(dataset):
        samples += batch["input_ids"].shape[0]
    return samples / (time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read once by paddle at import
    import paddle

    from visualbert.formats.vqa import read_answer_vocab
    from visualbert.features import open_features
    from visualbert.modeling import VisualBertConfig, VisualBertForQuestionAnswering
    from visualbert.inputs import get_tokenizer

    paddle.set_device("cpu")
    paddle.seed(0)
    from bench_features import make_data  # the same synthetic VQA-shaped features and packed store

    examples = make_data(args.workdir, args.num_images)
    dataset_args = (examples, get_tokenizer(), open_features(FEATURE_TYPE, args.workdir))
    from visualbert.inputs import VQADataset

    dataset = VQADataset(*dataset_args, answer_vocab=read_answer_vocab())

    loader_rate(dataset)  # warm page cache and worker start-up paths
    loader = [loader_rate(dataset) for _ in range(args.passes)]
    print(f"loader: {', '.join(f'{r:.1f}' for r in loader)} samples/s (batch {BATCH}, {WORKERS} workers, "
          f"{args.num_images} samples a pass)", flush=True)

    size = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512) if args.tiny else {}
    model = VisualBertForQuestionAnswering(VisualBertConfig(visual_embedding_dim=DIM, num_labels=len(dataset.answer_vocab), **size))
    model.train()
    opt = paddle.optimizer.AdamW(learning_rate=2e-5, parameters=model.parameters(), weight_decay=0.01, epsilon=1e-6,
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    keys = ("input_ids", "token_type_ids", "attention_mask", "visual_embeds", "visual_token_type_ids",
            "visual_attention_mask", "labels")

    def step(batch):
        loss = model(**{k: batch[k] for k in keys}).loss
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)

    it = iter(loader_for(dataset))
    held = [next(it) for _ in range(args.steps + 1)]
    del it
    step(held[0])
    start = time.perf_counter()
    for b in held[1:]:
        step(b)
    from_memory = BATCH * args.steps / (time.perf_counter() - start)
    print(f"train step fed from memory: {from_memory:.2f} samples/s", flush=True)

    it = iter(loader_for(dataset))
    step(next(it))
    start = time.perf_counter()
    for _ in range(args.steps):
        step(next(it))
    live = BATCH * args.steps / (time.perf_counter() - start)
    del it
    print(f"train step fed live by the loader: {live:.2f} samples/s", flush=True)

    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs", "threads": args.threads, "loadavg_at_end": os.getloadavg(), "tiny": args.tiny,
        "batch": BATCH, "workers": WORKERS, "loader_samples_per_s": round(statistics.median(loader), 1),
        "step_samples_per_s": round(from_memory, 2), "step_fed_live_samples_per_s": round(live, 2),
    }
    summary["loader_over_step"] = round(summary["loader_samples_per_s"] / from_memory, 1)
    summary["live_over_memory"] = round(live / from_memory, 3)
    print(f"loader / step = {summary['loader_over_step']}x (target >= 10x); live / from memory = "
          f"{summary['live_over_memory']}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
