"""Predict VQA2 answers with a fine-tuned model and write the EvalAI result file.

Writes [{"question_id": int, "answer": str}, ...] with exactly one entry per question of --split
(never <unk>). When the split has answers (val, minival, ...) it also prints the official VQA
accuracy, the same number training printed for that checkpoint.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from visualbert import quiet  # noqa: E402,F401  (first: it imports paddle without third-party noise)
import paddle  # noqa: E402
from visualbert import cli, environment, tasks  # noqa: E402
from visualbert.metrics import vqa_accuracy  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tasks.add_data_args(p, "vqa2")
    tasks.add_predict_args(g, "test", "result file to write (default: VQA2/result.json)")
    tasks.add_vqa_json_args(g, ("",))
    g.add_argument("--answer_vocab", default=None,
                   help="answer vocabulary file (default: the training run's answer_vocab.txt beside the model or in "
                        "its parent directory, else the shipped answers_vqa.txt)")
    cli.add_model_args(p, default_model="logs/vqa")
    args = p.parse_args(argv)
    args.output = args.output or os.path.join("VQA2", "result.json")
    return args


def main(argv=None):
    args = parse_args(argv)
    dataset, model = tasks.load_for_prediction("vqa2", args)
    with paddle.amp.auto_cast(enable=args.use_amp, dtype=args.amp_dtype):
        predictions = tasks.vqa_predict(model, dataset, args.batch_size, args.num_workers)
    if environment.is_main():
        tasks.write_vqa_result(args.output, predictions)
        print(f"wrote {len(predictions)} answers to {args.output}")
        truth = tasks.vqa_ground_truth(dataset)
        if truth:
            print(json.dumps({"split": args.split, "vqa_accuracy": vqa_accuracy(predictions, truth)["overall"]}))


if __name__ == "__main__":
    main()
