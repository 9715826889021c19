"""Predict NLVR2 with a fine-tuned model: a CSV of `identifier,True|False`, one line per example.

For dev / test1 (labelled) it also prints accuracy and consistency, as lil-lab/nlvr's metrics do.
"""
import argparse
import json
import os
import sys

import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from visualbert import cli, engine, tasks  # noqa: E402
from visualbert.metrics import nlvr2_scores  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tasks.add_data_args(p, "nlvr2")
    g.add_argument("--split", default="test1", help="split to predict: dev, test1, test2")
    g.add_argument("--output", default=None, help="predictions CSV (default: NLVR2/predictions_<split>.csv)")
    g.add_argument("--batch_size", type=int, default=64, help="samples per device")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    g.add_argument("--use_amp", action="store_true", help="mixed precision inference (GPU only)")
    g.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"], help="AMP compute dtype")
    g.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    cli.add_model_args(p, default_model="logs/nlvr2")
    args = p.parse_args(argv)
    args.output = args.output or os.path.join("NLVR2", f"predictions_{args.split}.csv")
    return args


def main(argv=None):
    args = parse_args(argv)
    engine.setup_device(args)
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = tasks.open_task_features(args)
        dataset = tasks.build("nlvr2", args.split, args, tokenizer, features)
        model = cli.load_model(cli.HEADS["nlvr2"], args.model_name_or_path, visual_embedding_dim=features.dim)
    with paddle.amp.auto_cast(enable=args.use_amp, dtype=args.amp_dtype):
        predictions = tasks.nlvr2_predict(model, dataset, args.batch_size, args.num_workers)
    if engine.is_main():
        tasks.write_nlvr2_csv(args.output, predictions)
        print(f"wrote {len(predictions)} predictions to {args.output}")
        labels = tasks.nlvr2_labels(dataset)
        if labels:
            scores = nlvr2_scores(predictions, labels)
            print(json.dumps({"split": args.split, "accuracy": scores["accuracy"], "consistency": scores["consistency"]}))


if __name__ == "__main__":
    main()
