"""Prediction engines side by side: ours through ONNX Runtime, through Paddle Inference and as the
dygraph model, and transformers' VisualBERT (torch), on the BERT-base VQA head with the same weights
and inputs. Ours load as ``ask``, ``serve`` and ``pipeline()`` load them
(``inference.load_inference_model(..., engine=...)``), export cache included.

    python benchmarks/bench_infer.py --theirs_python .venv-bench/bin/python --threads 2 --json infer.json

Measures the latency of one question (batch 1, repeated ``--repeats`` times per round, median) and the
throughput at batch 64 (one batch per round). Each contender lives in its own worker process, so
that an exported engine never shares a process with the dygraph model (its oneDNN state
would slow the dygraph model down) and so that transformers and torch come from their own
environment (``--theirs_python``: transformers 5.x needs a newer huggingface_hub than PaddleNLP
2.8). The workers wait while another works; rounds alternate their order, so slow drifts of a
shared machine hit all alike. Weights are drawn by transformers (seed 0) and copied into ours
through ``visualbert.convert.load_into``; inputs come from ``bench_model.make_inputs`` (text padded
to the batch max, 100 regions x 2048). Prints parity (max |logits difference| over the timed batch)
and a markdown table of medians and ratios (transformers' time / ours).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_model import machine, make_inputs, model_config  # noqa: E402

CONTENDERS = ("ours, ONNX Runtime", "ours, Paddle Inference", "ours, dygraph", "transformers")
WORKER_KIND = {"ours, ONNX Runtime": "onnxruntime", "ours, Paddle Inference": "paddle_inference",
               "ours, dygraph": "dygraph", "transformers": "theirs"}
OURS = CONTENDERS[:-1]
EXPORTED = CONTENDERS[:2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--theirs_python", required=True,
                   help="a python with torch (CPU use) and transformers, e.g. .venv-bench/bin/python")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for every contender")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (each runs every contender once)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=20, help="one-question calls per round (their median is the round's)")
    p.add_argument("--batch", type=int, default=64, help="questions per batch for the throughput")
    p.add_argument("--tiny", action="store_true", help="2-layer, 128-wide model: a smoke run")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- workers


def _worker(kind, workdir, threads, tiny):
    """Serve ``run <batch> <repeats>`` lines on stdin: time the forward, answer one JSON line."""
    import numpy as np

    cfg = model_config(tiny)
    weights = os.path.join(workdir, "weights.npz")
    if kind == "theirs":
        import torch
        import transformers

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = transformers.VisualBertForQuestionAnswering(transformers.VisualBertConfig(**cfg)).eval()
        np.savez(weights + ".tmp.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
        os.replace(weights + ".tmp.npz", weights)

        def forward(x):
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
        versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    else:
        import paddle

        from visualbert import convert, inference, modeling

        paddle.set_device("cpu")
        state = dict(np.load(weights))
        head = modeling.VisualBertForQuestionAnswering
        model = convert.load_into(convert.HEADS["vqa"](modeling.VisualBertConfig(**cfg)), state, "transformers", "vqa")
        model.eval()
        if kind in ("onnxruntime", "paddle_inference"):
            model_dir = os.path.join(workdir, kind)
            model.save_pretrained(model_dir)
            model = inference.load_inference_model(head, model_dir, threads=threads, engine=kind)
        else:
            from visualbert import cpu

            cpu.accelerate(model)

        def forward(x):
            with paddle.no_grad():
                return model(**{k: paddle.to_tensor(v) for k, v in x.items()}).logits.numpy()
        versions = {"paddle": paddle.__version__}
    print(json.dumps({"ready": True, **versions}), flush=True)
    for line in sys.stdin:
        _, batch, repeats = line.split()
        x = make_inputs("infer", int(batch))
        times = []
        for _ in range(int(repeats)):
            start = time.perf_counter()
            logits = forward(x)
            times.append(time.perf_counter() - start)
        np.save(os.path.join(workdir, f"logits-{kind}-{batch}.npy"), logits)
        print(json.dumps({"times": times}), flush=True)


class Worker:
    def __init__(self, name, python, workdir, args):
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   KMP_BLOCKTIME="0", PYTHONUNBUFFERED="1")
        # ours imports this checkout's package; theirs needs nothing from it but bench_model's helpers
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
        command = [python, os.path.abspath(__file__), "--worker", WORKER_KIND[name], "--workdir", workdir,
                   "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
        self.name, self.kind, self.workdir = name, WORKER_KIND[name], workdir
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._reply()

    def _reply(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"error: the {self.name} worker ended (exit {self.proc.wait()}); see its output above")

    def run(self, batch, repeats):
        self.proc.stdin.write(f"run {batch} {repeats}\n")
        self.proc.stdin.flush()
        return self._reply()["times"]

    def logits(self, batch):
        import numpy as np

        return np.load(os.path.join(self.workdir, f"logits-{self.kind}-{batch}.npy"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------------------- the run


def main(argv=None):
    args = parse_args(argv)
    header = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "threads": args.threads, "command": "python " + " ".join(sys.argv),
              "rounds": args.rounds, "warmup": args.warmup, "repeats": args.repeats, "batch": args.batch,
              "tiny": args.tiny, "loadavg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as workdir:
        # transformers first: it draws the weights the others load
        workers = {"transformers": Worker("transformers", args.theirs_python, workdir, args)}
        for name in OURS:
            workers[name] = Worker(name, sys.executable, workdir, args)
        for w in workers.values():
            header.update({k: v for k, v in w.info.items() if k != "ready"})
        print(json.dumps(header), flush=True)
        measures = {"latency": (1, args.repeats), "throughput": (args.batch, 1)}
        times = {(m, name): [] for m in measures for name in CONTENDERS}
        for r in range(args.warmup + args.rounds):
            order = CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]
            for measure, (batch, repeats) in measures.items():
                for name in order:
                    got = workers[name].run(batch, repeats)
                    if r >= args.warmup:
                        times[measure, name].append(statistics.median(got))
            print(f"round {r + 1}/{args.warmup + args.rounds}" + (" (warm-up)" if r < args.warmup else ""), flush=True)
        theirs = workers["transformers"].logits(args.batch)
        dygraph = workers["ours, dygraph"].logits(args.batch)
        parity = {name: float(abs(workers[name].logits(args.batch) - theirs).max()) for name in OURS}
        for name in EXPORTED:
            parity[f"{name} vs ours, dygraph"] = float(abs(workers[name].logits(args.batch) - dygraph).max())
            parity[f"{name} vs ours, dygraph: same top answer"] = int(
                (workers[name].logits(args.batch).argmax(-1) == dygraph.argmax(-1)).sum())
        for w in workers.values():
            w.close()
    header["loadavg_at_end"] = os.getloadavg()
    results = {"header": header, "parity_max_abs_diff": parity, "measures": {}}
    for measure, (batch, _) in measures.items():
        base = statistics.median(times[measure, "transformers"])
        rows = []
        for name in CONTENDERS:
            t = statistics.median(times[measure, name])
            per_round = [b / o for b, o in zip(times[measure, "transformers"], times[measure, name])]
            rows.append({"name": name, "median_s": round(t, 4), "samples_per_s": round(batch / t, 2),
                         "ratio": round(base / t, 3), "per_round_ratios": [round(v, 2) for v in per_round],
                         "times": [round(v, 4) for v in times[measure, name]]})
        results["measures"][measure] = {"batch": batch, "rows": rows}
    print(json.dumps({"parity_max_abs_diff": parity}))
    print("\n| measure | contender | median (s) | questions/s | transformers / ours | per-round ratios |\n"
          "|---|---|---|---|---|---|")
    for measure, r in results["measures"].items():
        for row in r["rows"]:
            rounds = ", ".join(map(str, row["per_round_ratios"]))
            print(f"| {measure} (batch {r['batch']}) | {row['name']} | {row['median_s']:.4f} | "
                  f"{row['samples_per_s']:.2f} | {row['ratio']:.2f}x | {rounds} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    if "--worker" in sys.argv:
        w = argparse.ArgumentParser()
        w.add_argument("--worker", choices=tuple(WORKER_KIND.values()))
        w.add_argument("--workdir")
        w.add_argument("--threads", type=int)
        w.add_argument("--tiny", action="store_true")
        a = w.parse_args()
        _worker(a.worker, a.workdir, a.threads, a.tiny)
    else:
        main()
