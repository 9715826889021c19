"""Latency of ``python -m visualbert.serve`` under concurrent clients, on loopback.

    python benchmarks/bench_serve.py [--model RUN/best] [--requests 200] [--clients 8] [--json OUT]

Without ``--model`` it first trains the own-images demo's tiny VQA model (PNG shapes, features by
``extract --backbone patches_hog``, 4 epochs) in a temporary directory. It starts the server as a user
would (a subprocess on 127.0.0.1, a free port), sends ``--requests`` multipart ``POST /v1/vqa``
requests (a demo image and a demo question each, upload included) from ``--clients`` threads, checks
every answer against the pipeline's answer for that image and question, and prints p50 / p95 / p99
latency (client side: upload, decode, features, model, reply) and requests/s. One client alone is
timed first for the no-contention latency.
"""
import argparse
import concurrent.futures
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

QUESTIONS = ("what shape is in the picture?", "what color is the shape?", "is there a circle?")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a trained VQA model on features made from images (default: train the demo's)")
    p.add_argument("--images", help="the images to ask about (default: the demo's)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--engine", choices=("dygraph", "paddle_inference", "onnxruntime"), default=None,
                   help="the server's --engine (default: its own default, onnxruntime on the CPU)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def demo_model(work):
    from visualbert.own_demo import commands, write_shapes

    write_shapes(work, seed=0)
    extract, train = commands(work, os.path.join(ROOT, "configs", "visualbert-tiny-demo.json"))[:2]
    train[train.index("--num_train_epochs") + 1] = "4"
    for args in (extract, train):
        subprocess.run([sys.executable] + args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return os.path.join(work, "run", "best"), os.path.join(work, "images")


def start_server(model, engine=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "visualbert.serve", "--model", model, "--port", "0"]
    proc = subprocess.Popen(command + (["--engine", engine] if engine else []), cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    line = proc.stdout.readline() if ready else ""
    if " on http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split(" on ")[1].split()[0].rstrip("/")


def post(url, image, question):
    from visualbert.serve import encode_multipart

    content_type, body = encode_multipart({"image": ("image.png", image), "question": question, "top_k": "1"})
    request = urllib.request.Request(url + "/v1/vqa", data=body, method="POST", headers={"Content-Type": content_type})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())["answers"][0]["answer"]
    return answer, time.perf_counter() - start


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        model, images = (args.model, args.images) if args.model else demo_model(work)
        names = sorted(os.listdir(images))[:16]
        data = {n: open(os.path.join(images, n), "rb").read() for n in names}
        from visualbert import pipeline

        vqa = pipeline("vqa", model)
        want = {(n, q): vqa(image=data[n], question=q, top_k=1)[0]["answer"] for n in names for q in QUESTIONS}
        jobs = [(names[k % len(names)], QUESTIONS[k % len(QUESTIONS)]) for k in range(args.requests)]
        proc, url = start_server(model, args.engine)
        try:
            for job in jobs[:10]:  # warm-up
                post(url, data[job[0]], job[1])
            alone = [post(url, data[n], q)[1] for n, q in jobs[:50]]
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(lambda job: (job, *post(url, data[job[0]], job[1])), jobs))
            wall = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    wrong = sum(answer != want[job] for job, answer, _ in results)
    latency = [seconds for _, _, seconds in results]
    report = {
        "requests": args.requests, "clients": args.clients, "wrong_answers": wrong,
        "one_client_p50_ms": 1000 * statistics.median(alone),
        "p50_ms": 1000 * percentile(latency, 50), "p95_ms": 1000 * percentile(latency, 95),
        "p99_ms": 1000 * percentile(latency, 99), "requests_per_s": args.requests / wall,
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    print(f"| {args.requests} requests, {args.clients} clients | {report['one_client_p50_ms']:.0f} ms | "
          f"{report['p50_ms']:.0f} ms | {report['p95_ms']:.0f} ms | {report['p99_ms']:.0f} ms | "
          f"{report['requests_per_s']:.1f} | {wrong} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
