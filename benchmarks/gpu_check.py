"""The comparisons benchmarks/gpu_check.sh makes; each subcommand prints what it compared and exits
non-zero when the comparison fails.

    python benchmarks/gpu_check.py attention [--device gpu]
    python benchmarks/gpu_check.py same_params RUN_A RUN_B [--atol 1e-5]
    python benchmarks/gpu_check.py same_answers RESULT_A.json RESULT_B.json [--min_agreement 0.95]
    python benchmarks/gpu_check.py same_features STORE_A STORE_B [--min_cosine 0.99]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# per compute dtype: how far the fused kernel may be from the matmul path, relative to the output's scale
ATTENTION_TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 3e-2}


def attention(args):
    """BERT-base self-attention (768 wide, 12 heads) on 4 samples with different padding, at an odd
    length and one divisible by 8 (where Paddle picks other kernels): the fused path against the
    matmul path under each dtype training uses, and which path each took."""
    import paddle
    import paddle.nn.functional as F

    from visualbert import modeling
    from visualbert.configuration import VisualBertConfig

    paddle.set_device(args.device)
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def recorded(*a, **kw):
        calls.append(kw.get("attn_mask").shape if kw.get("attn_mask") is not None else None)
        return real_sdpa(*a, **kw)

    modeling.F.scaled_dot_product_attention = recorded
    config = VisualBertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    paddle.seed(0)
    layer = modeling.VisualBertSelfAttention(config)
    layer.eval()
    failed = 0
    for dtype in ("float32", "float16", "bfloat16"):
        for length in (37, 40):
            if dtype != "float32" and args.device == "cpu":
                print(f"{dtype:9s} L={length}: not run (half precision needs a GPU)")
                continue
            hidden = paddle.randn([4, length, 768])
            keep = paddle.to_tensor((np.arange(length)[None, :] < (length - 5 * np.arange(4))[:, None]).astype("int64"))
            bias = modeling._mask_bias(keep, "float32")
            outputs = {}
            amp = dict(enable=dtype != "float32", dtype="float16" if dtype == "float32" else dtype, level="O1")
            for fused in (True, False):
                layer.use_fused = fused
                calls.clear()
                with paddle.amp.auto_cast(**amp):
                    outputs[fused] = layer(hidden, bias)[0].astype("float32").numpy()
                if fused:
                    took_fused, mask_shape = bool(calls), (calls[0] if calls else None)
            layer.use_fused = True
            scale = float(np.abs(outputs[False]).max())
            diff = float(np.abs(outputs[True] - outputs[False]).max()) / max(scale, 1e-6)
            expected_fused = dtype != "float32" and args.device != "cpu"
            ok = np.isfinite(outputs[True]).all() and diff <= ATTENTION_TOLERANCE[dtype] and took_fused == expected_fused
            if expected_fused and mask_shape != [4, 1, length, length]:
                ok = False
            failed += not ok
            print(f"{dtype:9s} L={length}: {'ok  ' if ok else 'FAIL'} fused path taken {took_fused} "
                  f"(expected {expected_fused}), kernel mask {mask_shape}, max relative difference {diff:.2e} "
                  f"(allowed {ATTENTION_TOLERANCE[dtype]:.0e})")
    return 1 if failed else 0


def same_params(args):
    from visualbert.safeload import load_paddle

    a, b = (load_paddle(os.path.join(run, "model", "model_state.pdparams")) for run in (args.a, args.b))
    if a.keys() != b.keys():
        print(f"the two models have different weights: {sorted(set(a) ^ set(b))[:5]}")
        return 1
    diff = max(float(np.abs(np.asarray(a[k], "float64") - np.asarray(b[k], "float64")).max()) for k in a)
    print(f"largest parameter difference {diff:.3g} (allowed {args.atol:g}) between {args.a} and {args.b}")
    return 0 if diff <= args.atol else 1


def same_answers(args):
    a, b = ({r["question_id"]: r["answer"] for r in json.load(open(path))} for path in (args.a, args.b))
    if a.keys() != b.keys():
        print(f"the two result files answer different questions ({len(a)} vs {len(b)})")
        return 1
    agreement = float(np.mean([a[q] == b[q] for q in a]))
    print(f"{agreement:.2%} of {len(a)} answers agree (at least {args.min_agreement:.0%} required)")
    return 0 if agreement >= args.min_agreement else 1


def same_features(args):
    from visualbert.features import open_feature_dir

    a, b = open_feature_dir(args.a), open_feature_dir(args.b)
    keys = sorted(a.keys())
    if keys != sorted(b.keys()):
        print("the two stores hold different images")
        return 1
    worst = 1.0
    for key in keys:
        x, y = a.get(key).astype("float64").ravel(), b.get(key).astype("float64").ravel()
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            print(f"{key}: non-finite features")
            return 1
        worst = min(worst, float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12)))
    print(f"{len(keys)} images; lowest cosine similarity {worst:.5f} (at least {args.min_cosine} required)")
    return 0 if worst >= args.min_cosine else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("attention")
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    p = sub.add_parser("same_params")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=1e-5)
    p = sub.add_parser("same_answers")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--min_agreement", type=float, default=0.95)
    p = sub.add_parser("same_features")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--min_cosine", type=float, default=0.99)
    args = parser.parse_args(argv)
    return {"attention": attention, "same_params": same_params, "same_answers": same_answers,
            "same_features": same_features}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
