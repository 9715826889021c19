"""Predict NLVR2 with a fine-tuned model: a CSV of `identifier,True|False`, one line per example.

For dev / test1 (labelled) it also prints accuracy and consistency, as lil-lab/nlvr's metrics do.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from visualbert import quiet  # noqa: E402,F401  (first: it imports paddle without third-party noise)
import paddle  # noqa: E402
from visualbert import cli, environment, tasks  # noqa: E402
from visualbert.metrics import nlvr2_scores  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tasks.add_data_args(p, "nlvr2")
    tasks.add_predict_args(g, "test1", "predictions CSV (default: NLVR2/predictions_<split>.csv)")
    cli.add_model_args(p, default_model="logs/nlvr2")
    args = p.parse_args(argv)
    args.output = args.output or os.path.join("NLVR2", f"predictions_{args.split}.csv")
    return args


def main(argv=None):
    args = parse_args(argv)
    dataset, model = tasks.load_for_prediction("nlvr2", args)
    with paddle.amp.auto_cast(enable=args.use_amp, dtype=args.amp_dtype):
        predictions = tasks.nlvr2_predict(model, dataset, args.batch_size, args.num_workers)
    if environment.is_main():
        tasks.write_nlvr2_csv(args.output, predictions)
        print(f"wrote {len(predictions)} predictions to {args.output}")
        labels = tasks.nlvr2_labels(dataset)
        if labels:
            scores = nlvr2_scores(predictions, labels)
            print(json.dumps({"split": args.split, "accuracy": scores["accuracy"], "consistency": scores["consistency"]}))


if __name__ == "__main__":
    main()
