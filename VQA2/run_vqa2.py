"""Fine-tune VisualBERT on VQA2: 3,129-way answer classification with official soft-score targets.

Evaluates with the official VQA accuracy on --eval_split every epoch (or every --eval_steps),
keeps the best model in <output_dir>/best, and never trains on the evaluation split's questions.

Data: imdb splits under --input_dir (--train_split / --eval_split), or any questions and
annotations in the official VQA JSON format (--train_questions / --train_annotations, optionally
--eval_questions / --eval_annotations) with features from --features (python -m visualbert.extract).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from visualbert import quiet  # noqa: E402,F401  (first: it imports paddle without third-party noise)
from visualbert import cli, engine, environment, tasks  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = tasks.add_data_args(p, "vqa2")
    g.add_argument("--task_name", default="vqa2", choices=["vqa2"], help="task (kept for the seed's scripts)")
    g.add_argument("--train_split", default="train", help="imdb split to train on: train, trainval, val, ...")
    g.add_argument("--eval_split", default="val", help="imdb split scored each epoch (minival with --train_split trainval); "
                                                      "its questions are removed from training; 'none' to skip")
    tasks.add_vqa_json_args(g, ("train", "eval"))
    g.add_argument("--answer_vocab", default=None,
                   help="answer vocabulary file, or build[:K]: <unk> then the K most frequent training answers (all "
                        "without K); saved as <output_dir>/answer_vocab.txt, which run_predict.py reuses "
                        "(default: the shipped answers_vqa.txt)")
    g.add_argument("--batch_size", type=cli.positive_int, default=64, help="samples per device, training and evaluation")
    g.add_argument("--loss", default="kl", choices=["kl", "bce"],
                   help="kl: KL-divergence to the soft scores (transformers); bce: binary cross-entropy (MMF)")
    cli.add_model_args(p, default_model="visualbert-vqa-pre")
    cli.add_training_args(p, learning_rate=2e-5, num_train_epochs=10, save_steps=10000)
    return tasks.finish_finetune_args(p, p.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    environment.setup_device(args)
    train_ds, eval_ds, model = tasks.load_for_finetuning("vqa2", args)
    evaluate = None
    if eval_ds is not None:
        evaluate = lambda m: tasks.vqa_evaluate(m, eval_ds, args.batch_size, args.num_workers)  # noqa: E731
    engine.train(args, model, train_ds, train_ds.collate_fn(), {"loss": lambda b: len(b["input_ids"])},
                 evaluate=evaluate, best_metric="vqa_accuracy", forward_kwargs={"loss_type": args.loss},
                 run_files=tasks.vqa_run_files(train_ds))


if __name__ == "__main__":
    main()
