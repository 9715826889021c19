"""Our VisualBERT (Paddle) against transformers' VisualBERT (torch), side by side, on one CPU.

    python benchmarks/bench_model.py [--threads 2] [--rounds 3] [--tasks pretrain vqa infer] [--json OUT]

Both models get the same BERT-base config, the same weights (drawn in transformers, copied into
ours by ``visualbert.convert.load_into``, the converter's own code path) and the same inputs
(one numpy RNG). Before timing, one eval-mode forward of each is compared to show they agree.

Tasks (train steps: forward, backward, global-norm clip 1.0, AdamW step, zero grad; dropout 0.1
active in both, i.e. train mode; fp32 in both):

    pretrain  MLM + sentence-image matching, 16 caption pairs x 100 regions of 2048
    vqa       VQA fine-tuning (3129 answers, KL loss), batch 32
    infer     VQA logits, eval mode, no autograd, batch 64

Every task times ours as the scripts run it on CPU (``visualbert.cpu.accelerate``), ours on Paddle's
stock CPU layers (after ``visualbert.cpu.restore``: Paddle's kernels and strided views, what the same
model cost without the CPU layers), the
task's own ablation (pretraining: MLM logits at every position; VQA: the last layer at every
position) and theirs. After
``--warmup`` untimed rounds, each round runs every variant once, in alternating order, so slow
drifts of a shared machine hit all alike; the medians and ratios (ours / theirs, samples/s) are
printed as a markdown table. transformers and torch are benchmark-only dependencies.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

TASKS = ("pretrain", "vqa", "infer")
BATCH = {"pretrain": 16, "vqa": 32, "infer": 64}
# Tokens of text per sample: caption pairs ([CLS] a [SEP] b [SEP]) are longer than VQA questions
# ([CLS] question ? [MASK] [SEP]); lengths vary, so batches carry padding as in real training.
TEXT_LEN = {"pretrain": (24, 40), "vqa": (10, 20), "infer": (10, 20)}
REGIONS, FEATURE_DIM, NUM_ANSWERS = 100, 2048, 3129
CLS, SEP, MASK = 101, 102, 103


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads for both frameworks")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per task (each runs every variant once)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--to_static", action="store_true", help="also time ours under paddle.jit.to_static")
    p.add_argument("--tiny", action="store_true", help="2-layer, 128-wide model and small batches: a smoke run")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def model_config(tiny):
    if tiny:
        return dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                    visual_embedding_dim=FEATURE_DIM, num_labels=NUM_ANSWERS)
    return dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                visual_embedding_dim=FEATURE_DIM, num_labels=NUM_ANSWERS)


def make_inputs(task, batch, seed=0):
    """One batch as numpy, padded to its longest text, as visualbert.inputs.Collator does."""
    import numpy as np

    rng = np.random.default_rng([seed, TASKS.index(task)])
    lo, hi = TEXT_LEN[task]
    lengths = rng.integers(lo, hi + 1, batch)
    text_len = int(lengths.max())
    positions = np.arange(text_len)[None, :]
    attention_mask = (positions < lengths[:, None]).astype(np.int64)
    input_ids = rng.integers(1000, 30522, (batch, text_len)) * attention_mask
    input_ids[:, 0] = CLS
    input_ids[np.arange(batch), lengths - 1] = SEP
    x = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask,
         "token_type_ids": np.zeros_like(input_ids),
         "visual_embeds": rng.random((batch, REGIONS, FEATURE_DIM), dtype=np.float32),
         "visual_attention_mask": np.ones((batch, REGIONS), np.int64),
         "visual_token_type_ids": np.ones((batch, REGIONS), np.int64)}
    if task == "pretrain":
        x["token_type_ids"] = ((positions >= (lengths[:, None] // 2)) & (attention_mask == 1)).astype(np.int64)
        candidates = (attention_mask == 1) & (input_ids != CLS) & (input_ids != SEP)
        chosen = candidates & (rng.random(input_ids.shape) < 0.15)
        chosen[np.arange(batch), 1] = True  # at least one masked token per caption pair
        x["labels"] = np.where(chosen, input_ids, -100).astype(np.int64)
        x["input_ids"] = np.where(chosen, MASK, input_ids).astype(np.int64)
        x["sentence_image_labels"] = rng.integers(0, 2, batch).astype(np.int64)
    elif task == "vqa":
        labels = np.zeros((batch, NUM_ANSWERS), np.float32)
        for row in labels:
            row[rng.choice(NUM_ANSWERS, 3, replace=False)] = rng.choice([0.3, 0.6, 0.9, 1.0], 3)
        x["labels"] = labels
    return x


def median_time(times):
    return statistics.median(times) if times else float("nan")


class Contender:
    """One thing to time: a name, which side it is on, and a zero-argument step."""

    def __init__(self, name, side, step):
        self.name, self.side, self.step, self.times = name, side, step, []


def build_task(task, cfg, batch, use_to_static):
    """(contenders, parity max-abs-diff) for one task; ours and theirs hold the same weights."""
    import numpy as np
    import paddle
    import torch
    import transformers

    from visualbert import convert, cpu, modeling

    head = "pretraining" if task == "pretrain" else "vqa"
    hf_cls = {"pretraining": transformers.VisualBertForPreTraining,
              "vqa": transformers.VisualBertForQuestionAnswering}[head]
    torch.manual_seed(0)
    theirs = hf_cls(transformers.VisualBertConfig(**cfg))
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours = convert.load_into(convert.HEADS[head](modeling.VisualBertConfig(**cfg)), state, "transformers", head)
    del state

    x = make_inputs(task, batch)
    pd_x = {k: paddle.to_tensor(v) for k, v in x.items()}
    th_x = {k: torch.from_numpy(v) for k, v in x.items()}
    if task == "pretrain":
        # transformers wants MLM labels over text + regions; ours takes the text part (what the
        # Collator produces) and pads it itself.
        pad = np.full((batch, REGIONS), -100, np.int64)
        th_x["labels"] = torch.from_numpy(np.concatenate([x["labels"], pad], axis=1))
    inputs_only = [k for k in x if k not in ("labels", "sentence_image_labels")]

    cpu.accelerate(ours)
    diff = parity(task, ours, theirs, {k: pd_x[k][:2] for k in inputs_only}, {k: th_x[k][:2] for k in inputs_only})

    def kernels(fast):  # at every step, so the variants can alternate
        (cpu.accelerate if fast else cpu.restore)(ours)

    # output_hidden_states=True makes the VQA head run the last layer at every position.
    every_position = {"output_hidden_states": True}
    contenders = []
    if task == "infer":
        ours.eval()
        theirs.eval()
        pd_in = {k: pd_x[k] for k in inputs_only}
        th_in = {k: th_x[k] for k in inputs_only}

        def ours_infer(fast, extra=None, model=ours):
            def step():
                kernels(fast)
                with paddle.no_grad():
                    model(**pd_in, **(extra or {})).logits.numpy()
            return step

        def theirs_infer():
            with torch.inference_mode():
                theirs(**th_in).logits.numpy()

        contenders += [Contender("ours", "ours", ours_infer(True)),
                       Contender("ours, last layer at every position", "ours", ours_infer(True, every_position)),
                       Contender("ours, stock Paddle CPU kernels", "ours", ours_infer(False))]
        if use_to_static:
            contenders.append(Contender("ours, to_static", "ours", ours_infer(True, model=paddle.jit.to_static(ours))))
        contenders.append(Contender("transformers", "theirs", theirs_infer))
        return contenders, diff

    ours.train()
    theirs.train()
    pd_opt = paddle.optimizer.AdamW(learning_rate=2e-5, parameters=ours.parameters(), weight_decay=0.01,
                                    epsilon=1e-6, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    th_opt = torch.optim.AdamW(theirs.parameters(), lr=2e-5, weight_decay=0.01, eps=1e-6)
    ours_kw = {"predict_masked_only": True} if task == "pretrain" else {}

    def ours_train(fast, extra=None, model=ours):
        kw = dict(pd_x, **(ours_kw if extra is None else extra))

        def step():
            kernels(fast)
            loss = model(**kw).loss
            loss.backward()
            pd_opt.step()
            pd_opt.clear_grad()
            float(loss)
        return step

    def theirs_train():
        loss = theirs(**th_x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        th_opt.step()
        th_opt.zero_grad()
        float(loss)

    contenders.append(Contender("ours", "ours", ours_train(True)))
    if task == "pretrain":
        contenders.append(Contender("ours, MLM logits at every position", "ours", ours_train(True, {})))
    else:
        contenders.append(Contender("ours, last layer at every position", "ours", ours_train(True, every_position)))
    contenders.append(Contender("ours, stock Paddle CPU kernels", "ours", ours_train(False)))
    if use_to_static:
        contenders.append(Contender("ours, to_static", "ours", ours_train(True, model=paddle.jit.to_static(ours))))
    contenders.append(Contender("transformers", "theirs", theirs_train))
    return contenders, diff


def parity(task, ours, theirs, pd_in, th_in):
    """Largest |ours - theirs| over the eval-mode outputs the task is about."""
    import numpy as np
    import paddle
    import torch

    ours.eval()
    theirs.eval()
    with paddle.no_grad(), torch.no_grad():
        a, b = ours(**pd_in), theirs(**th_in)
    if task == "pretrain":
        pairs = [(a.prediction_logits, b.prediction_logits), (a.seq_relationship_logits, b.seq_relationship_logits)]
    else:
        pairs = [(a.logits, b.logits)]
    return max(float(np.abs(p.numpy() - t.numpy()).max()) for p, t in pairs)


def run_task(contenders, rounds, warmup):
    for r in range(warmup + rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        took = {}
        for c in order:
            # Lets the other framework's OpenMP threads stop spinning before this one starts.
            time.sleep(0.5)
            start = time.perf_counter()
            c.step()
            took[c.name] = time.perf_counter() - start
            if r >= warmup:
                c.times.append(took[c.name])
        label = "warm-up" if r < warmup else f"round {r - warmup + 1}/{rounds}"
        print(f"  {label}: " + "; ".join(f"{c.name} {took[c.name]:.2f}s" for c in contenders), flush=True)


# ---------------------------------------------------------------------------- ours alone: throughput + MFU
# ``python benchmarks/bench_model.py mfu ...`` (what benchmarks/gpu.sh runs); torch is not imported.

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment; --peak_tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                    "L40": 181.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def parse_mfu_args(argv):
    p = argparse.ArgumentParser(prog="bench_model.py mfu", description="Our model alone: samples/s, achieved "
                                "TFLOP/s and model FLOP utilisation for the pretraining step, the VQA step and inference.")
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    p.add_argument("--amp", default="bfloat16", choices=["bfloat16", "float16", "none"], help="auto_cast dtype")
    p.add_argument("--amp_level", default="O1", choices=["O1", "O2"],
                   help="O1 = what the engine runs (fp32 weights, bf16 matmuls); O2 = bf16 weights, fp32 master copy")
    p.add_argument("--batch", type=int, default=128, help="samples per step (all three tasks)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per task")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--peak_tflops", type=float, help="device peak for --amp (default: looked up by device name)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (--device cpu)")
    p.add_argument("--tiny", action="store_true", help="2-layer, 128-wide model: proves the script runs")
    p.add_argument("--out", help="write the JSON here")
    return p.parse_args(argv)


def model_flops(task, cfg, batch, x):
    """Matmul FLOPs of one step on batch ``x`` (numpy inputs), counted as executed.

    Per layer and sequence position (L = padded text + regions, h hidden, f intermediate):
    2(4h^2 + 2hf) for the Q/K/V/output and feed-forward matmuls and 4Lh for Q K^T and P V.
    The VQA head reads one position, so there the last layer computes K and V at every position
    (2 * 2h^2 each) and the rest at that position only. Plus 2 D h per region (visual projection)
    and the head: VQA 2 h A per sample (A answers); pretraining 2h^2 per sample (pooler),
    2h^2 + 2 h vocab per *masked* token (ours decodes only those) and 2h*2 for matching.
    Training = 3x forward (backward = two matmuls per forward one), except the visual
    projection's backward, which has no input gradient (2x). Embedding lookups, LayerNorm,
    softmax, GELU, the loss and the optimizer are not counted.
    """
    h, f, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    text_len, regions = x["input_ids"].shape[1], x["visual_embeds"].shape[1]
    seq = text_len + regions
    per_position = 2 * (4 * h * h + 2 * h * f) + 4 * seq * h
    visual = batch * regions * 2 * cfg["visual_embedding_dim"] * h
    if task == "pretrain":
        body = batch * seq * n * per_position
        masked = int((x["labels"] != -100).sum())
        head = batch * 2 * h * h + masked * (2 * h * h + 2 * h * 30522) + batch * 2 * h * 2
    else:
        last_layer = seq * 2 * 2 * h * h + 2 * (2 * h * h + 2 * h * f) + 4 * seq * h
        body = batch * (seq * (n - 1) * per_position + last_layer)
        head = batch * 2 * h * cfg["num_labels"]
    if task == "infer":
        return body + visual + head
    return 3 * (body + head) + 2 * visual


def run_mfu(argv):
    args = parse_mfu_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import paddle

    from visualbert import cpu, modeling

    paddle.set_device(args.device)
    paddle.seed(0)
    on_gpu = args.device == "gpu"
    device_name = paddle.device.cuda.get_device_name() if on_gpu else machine()
    peak = args.peak_tflops
    if peak is None and on_gpu and args.amp == "bfloat16":
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in device_name.lower()), None)
    cfg = model_config(args.tiny)
    amp = args.amp != "none"
    result = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "device": device_name,
              "paddle": paddle.__version__, "amp": args.amp, "amp_level": args.amp_level if amp else None,
              "batch": args.batch, "steps": args.steps, "tiny": args.tiny, "peak_tflops": peak,
              "flops_counted": model_flops.__doc__.split("\n\n")[0] + " " + " ".join(
                  line.strip() for line in model_flops.__doc__.split("\n\n")[1].splitlines()),
              "tasks": {}}

    def sync():
        if on_gpu:
            paddle.device.synchronize()

    for task in args.tasks:
        cls = modeling.VisualBertForPreTraining if task == "pretrain" else modeling.VisualBertForQuestionAnswering
        model = cls(modeling.VisualBertConfig(**cfg))
        if not on_gpu:  # as the scripts run it
            cpu.accelerate(model)
        x = make_inputs(task, args.batch)
        batch = {k: paddle.to_tensor(v) for k, v in x.items()}
        opt = None
        if task != "infer":
            opt = paddle.optimizer.AdamW(learning_rate=2e-5, parameters=model.parameters(), weight_decay=0.01,
                                         epsilon=1e-6, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0),
                                         multi_precision=amp and args.amp_level == "O2")
        if amp and args.amp_level == "O2":
            model, opt = paddle.amp.decorate(model, opt, level="O2", dtype=args.amp)
        scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if args.amp == "float16" and opt else None
        extra = {"predict_masked_only": True} if task == "pretrain" else {}

        def step():
            with paddle.amp.auto_cast(enable=amp, dtype=args.amp if amp else "float16", level=args.amp_level):
                if opt is None:
                    with paddle.no_grad():
                        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                loss = model(**batch, **extra).loss
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.clear_grad()
            return loss

        model.train(opt is not None)
        for _ in range(args.warmup):
            step()
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            out = step()
        float(out.astype("float32").sum())
        sync()
        seconds = (time.perf_counter() - start) / args.steps
        flops = model_flops(task, cfg, args.batch, x)
        tflops = flops / seconds / 1e12
        result["tasks"][task] = {
            "samples_per_s": round(args.batch / seconds, 2), "step_s": round(seconds, 5),
            "tflop_per_step": round(flops / 1e12, 4), "achieved_tflops": round(tflops, 3),
            "mfu": round(tflops / peak, 4) if peak else None,
            "sequence": x["input_ids"].shape[1] + x["visual_embeds"].shape[1],
        }
        print(f"{task}: {result['tasks'][task]}", flush=True)
        model = opt = batch = None  # free this task's memory before the next one is built
        gc.collect()
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main(argv=None):
    args = parse_args(argv)
    # Paddle reads OMP_NUM_THREADS once, at import (and forces it to 1 when unset); torch is told
    # explicitly too, so both run on the same number of threads.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import paddle
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    paddle.set_device("cpu")
    paddle.seed(0)
    cfg = model_config(args.tiny)
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "threads": args.threads, "command": "python " + " ".join(sys.argv),
        "paddle": paddle.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "rounds": args.rounds, "warmup": args.warmup, "tiny": args.tiny,
        "loadavg_at_start": os.getloadavg(),
    }
    print(json.dumps(header))
    results = {"header": header, "tasks": {}}
    for task in args.tasks:
        batch = 2 if args.tiny else BATCH[task]
        print(f"{task}: batch {batch}", flush=True)
        contenders, diff = build_task(task, cfg, batch, args.to_static)
        print(f"  parity (eval forward, 2 samples): max |ours - transformers| = {diff:.2e}", flush=True)
        run_task(contenders, args.rounds, args.warmup)
        theirs = next(c for c in contenders if c.side == "theirs")
        rows = []
        for c in contenders:
            t = median_time(c.times)
            rows.append({"name": c.name, "median_s": round(t, 4), "samples_per_s": round(batch / t, 3),
                         "ratio": round(median_time(theirs.times) / t, 3), "times": [round(v, 4) for v in c.times]})
        results["tasks"][task] = {"batch": batch, "parity_max_abs_diff": diff, "rows": rows}
        del contenders
        gc.collect()

    print("\n| task | variant | median step (s) | samples/s | ours / transformers |\n|---|---|---|---|---|")
    for task, r in results["tasks"].items():
        for row in r["rows"]:
            print(f"| {task} (batch {r['batch']}) | {row['name']} | {row['median_s']:.3f} | "
                  f"{row['samples_per_s']:.2f} | {row['ratio']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["mfu"]:
        run_mfu(sys.argv[2:])
    else:
        main()
