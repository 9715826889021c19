"""Predict VQA2 answers with a fine-tuned model and write the EvalAI result file.

Writes [{"question_id": int, "answer": str}, ...] with exactly one entry per question of --split
(never <unk>). When the split has answers (val, minival, ...) it also prints the official VQA
accuracy, the same number training printed for that checkpoint.
"""
import argparse
import json
import os
import sys

import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from visualbert import cli, engine, tasks  # noqa: E402
from visualbert.metrics import vqa_accuracy  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tasks.add_data_args(p, "vqa2")
    g.add_argument("--split", default="test", help="imdb split to predict: test (test2015), val, minival, ...")
    g.add_argument("--answer_vocab", default=None, help="answer vocabulary file (default: the shipped answers_vqa.txt)")
    g.add_argument("--output", default="VQA2/result.json", help="result file to write")
    g.add_argument("--batch_size", type=int, default=64, help="samples per device")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    g.add_argument("--use_amp", action="store_true", help="mixed precision inference (GPU only)")
    g.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"], help="AMP compute dtype")
    g.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    cli.add_model_args(p, default_model="logs/vqa")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    engine.setup_device(args)
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = tasks.open_task_features(args)
        dataset = tasks.build("vqa2", args.split, args, tokenizer, features)
        model = cli.load_model(cli.HEADS["vqa"], args.model_name_or_path, visual_embedding_dim=features.dim)
    with paddle.amp.auto_cast(enable=args.use_amp, dtype=args.amp_dtype):
        predictions = tasks.vqa_predict(model, dataset, args.batch_size, args.num_workers)
    if engine.is_main():
        tasks.write_vqa_result(args.output, predictions)
        print(f"wrote {len(predictions)} answers to {args.output}")
        truth = tasks.vqa_ground_truth(dataset)
        if truth:
            print(json.dumps({"split": args.split, "vqa_accuracy": vqa_accuracy(predictions, truth)["overall"]}))


if __name__ == "__main__":
    main()
