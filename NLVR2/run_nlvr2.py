"""Fine-tune VisualBERT on NLVR2: is the sentence true of the image pair?

Left image regions get visual token type 0, right ones 1. Evaluates accuracy and consistency on
--eval_split every epoch (or every --eval_steps) and keeps the best model in <output_dir>/best.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from visualbert import quiet  # noqa: E402,F401  (first: it imports paddle without third-party noise)
from visualbert import cli, engine, environment, tasks  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tasks.add_data_args(p, "nlvr2")
    g.add_argument("--task_name", default="nlvr2", choices=["nlvr2"], help="task (kept for the seed's scripts)")
    g.add_argument("--train_split", default="train", help="split to train on")
    g.add_argument("--eval_split", default="dev", help="split scored each epoch ('none' to skip)")
    g.add_argument("--batch_size", type=cli.positive_int, default=16, help="samples per device, training and evaluation")
    cli.add_model_args(p, default_model="visualbert-nlvr2-pre")
    cli.add_training_args(p, learning_rate=2e-5, num_train_epochs=10, save_steps=5000)
    return tasks.finish_finetune_args(p, p.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    environment.setup_device(args)
    train_ds, eval_ds, model = tasks.load_for_finetuning("nlvr2", args)
    evaluate = None
    if eval_ds is not None:
        evaluate = lambda m: tasks.nlvr2_evaluate(m, eval_ds, args.batch_size, args.num_workers)  # noqa: E731
    engine.train(args, model, train_ds, train_ds.collate_fn(), {"loss": lambda b: len(b["input_ids"])},
                 evaluate=evaluate, best_metric="accuracy")


if __name__ == "__main__":
    main()
