"""Pretrain VisualBERT on region features.

  coco_captions  masked LM + image-caption matching (1 = the caption belongs to the image)
  vqa2           masked LM on "question ? answer"
  nlvr2          masked LM + the NLVR2 label on the matching head (--no_nlvr2_label: MLM only)

Single process:  python run_pretrain.py --input_dir X_COCO --output_dir logs/x --dataset coco_captions ...
Data parallel:   python -m paddle.distributed.launch --gpus 0,1 run_pretrain.py ...
"""
import argparse

from visualbert import quiet  # noqa: F401  (first: it imports paddle without third-party noise)

import numpy as np
import paddle
import paddle.nn.functional as F

from visualbert import cli, engine, environment, tasks
from visualbert.datasets import DEFAULT_FEATURE_TYPE, load_dataset
from visualbert.features import FEATURE_TYPES
from visualbert.modeling import VisualBertForPreTraining
from visualbert.processing import CaptionPretrainDataset, NLVR2PretrainDataset, VQAPretrainDataset

SPLITS = {  # (train, eval) defaults
    "coco_captions": ("train", "val"),
    "vqa2": ("train", "minival"),
    "nlvr2": ("train", "dev"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--input_dir", default=None, help="data root (X_COCO/ or X_NLVR/); annotations in <input_dir>/annotations "
                                                     "unless --annotation_dir; needed unless --features names the features")
    g.add_argument("--annotation_dir", default=None, help="where the annotation files are (default: <input_dir>/annotations, "
                                                          "then PaddleNLP's dataset home)")
    g.add_argument("--dataset", required=True, choices=sorted(SPLITS), help="pretraining corpus")
    g.add_argument("--image_feature_type", default=None, choices=sorted(FEATURE_TYPES),
                   help="region features (default: the seed's choice for --dataset)")
    g.add_argument("--train_split", default=None, help="annotation split to train on (default: train)")
    g.add_argument("--eval_split", default=None, help="split to evaluate on each epoch (default: val / minival / dev; "
                                                      "'none' to skip)")
    g.add_argument("--max_eval_samples", type=cli.positive_int, default=5000, help="evaluate on at most this many examples")
    g.add_argument("--max_seq_length", type=cli.int_range(4), default=128,
                   help="longest token sequence, [CLS]/[SEP] included (at least 4)")
    tasks.add_feature_args(g)
    g.add_argument("--mask_prob", type=cli.fraction, default=0.15,
                   help="share of text tokens chosen for masked LM, in [0, 1] (at least one per sentence)")
    g.add_argument("--no_nlvr2_label", action="store_true", help="nlvr2: train masked LM only, without the label")
    g.add_argument("--train_batch_size", type=cli.positive_int, default=16, help="samples per device per micro-batch")
    g.add_argument("--eval_batch_size", type=cli.positive_int, default=64, help="samples per device when evaluating")
    cli.add_model_args(p, default_model="visualbert-vqa-coco-pre")
    cli.add_training_args(p, learning_rate=1e-5, num_train_epochs=3)
    args = cli.check_training_args(p, p.parse_args(argv))
    train_split, eval_split = SPLITS[args.dataset]
    args.train_split = args.train_split or train_split
    args.eval_split = None if args.eval_split == "none" else (args.eval_split or eval_split)
    args.image_feature_type = args.image_feature_type or DEFAULT_FEATURE_TYPE[args.dataset]
    return args


def build_dataset(args, split, tokenizer, features, exclude=None):
    examples = load_dataset(args.dataset, split, input_dir=args.input_dir, annotation_dir=args.annotation_dir,
                            exclude_split=exclude)
    tasks.check_features_exist(examples, features, args.dataset, split)
    common = dict(max_seq_length=args.max_seq_length, mask_prob=args.mask_prob, seed=args.seed,
                  visual_dtype=args.feature_dtype)
    if args.dataset == "coco_captions":
        return CaptionPretrainDataset(examples, tokenizer, features, **common)
    if args.dataset == "vqa2":
        return VQAPretrainDataset(examples, tokenizer, features, **common)
    return NLVR2PretrainDataset(examples, tokenizer, features, **common)


def uses_matching(args):
    return args.dataset == "coco_captions" or (args.dataset == "nlvr2" and not args.no_nlvr2_label)


def eval_step(with_matching):
    """Per-sample masked-LM loss sum / count / correct, and whether the matching head was right."""

    def step(model, batch):
        kwargs = engine.model_kwargs(model, batch, {"predict_masked_only": True})
        if not with_matching:
            kwargs.pop("sentence_image_labels", None)
        out = model(**kwargs)
        labels = batch["labels"]
        masked = labels != -100
        targets = labels[masked]
        token_loss = F.cross_entropy(out.prediction_logits.astype("float32"), targets, reduction="none").reshape([-1])
        token_right = (out.prediction_logits.argmax(-1) == targets).astype("float32")
        counts = masked.astype("int64").sum(1).numpy()
        bounds = np.cumsum(counts)[:-1]
        losses = np.split(token_loss.numpy(), bounds)
        rights = np.split(token_right.numpy(), bounds)
        match = [None] * len(counts)
        if with_matching:
            match = (out.seq_relationship_logits.argmax(-1) == batch["sentence_image_labels"]).numpy().tolist()
        return [(float(l.sum()), int(c), float(r.sum()), m) for l, c, r, m in zip(losses, counts, rights, match)]

    return step


def make_evaluate(args, eval_ds, collate_fn):
    """Masked-LM loss and accuracy over the masked tokens, and matching accuracy, on eval_ds."""
    step = eval_step(uses_matching(args))

    def evaluate(model):
        rows = engine.predict(model, eval_ds, collate_fn, args.eval_batch_size, step)
        loss, count, right = (sum(r[i] for r in rows) for i in range(3))
        result = {"mlm_loss": loss / max(count, 1), "mlm_accuracy": right / max(count, 1)}
        if uses_matching(args):
            result["matching_accuracy"] = float(np.mean([r[3] for r in rows]))
        return result

    return evaluate


def main(argv=None):
    args = parse_args(argv)
    environment.setup_device(args)
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = tasks.open_task_features(args)
        train_ds = build_dataset(args, args.train_split, tokenizer, features, exclude=args.eval_split)
        eval_ds = build_dataset(args, args.eval_split, tokenizer, features) if args.eval_split else None
        model = cli.load_model(VisualBertForPreTraining, args.model_name_or_path, visual_embedding_dim=features.dim,
                               cpu_kernels=args.cpu_kernels)

    loss_terms = {"masked_lm_loss": lambda b: int((b["labels"] != -100).sum())}
    if uses_matching(args):  # with --no_nlvr2_label the label is in the batch but never trained on
        loss_terms["sentence_image_loss"] = lambda b: len(b["input_ids"])

    evaluate = None
    if eval_ds is not None:
        if len(eval_ds) > args.max_eval_samples:  # a fixed, seeded subset keeps evaluation short
            keep = np.random.default_rng(args.seed).choice(len(eval_ds), args.max_eval_samples, replace=False)
            eval_ds = paddle.io.Subset(eval_ds, sorted(keep.tolist()))
        evaluate = make_evaluate(args, eval_ds, train_ds.collate_fn())
    engine.train(args, model, train_ds, train_ds.collate_fn(), loss_terms, evaluate=evaluate,
                 best_metric="mlm_accuracy" if evaluate else None, forward_kwargs={"predict_masked_only": True})


if __name__ == "__main__":
    main()
