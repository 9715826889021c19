"""VQA2 and NLVR2 as tasks: datasets for a split, predictions, official scores, leaderboard files.

The fine-tuning scripts and the prediction scripts both call these, so what training prints as
its evaluation and what ``run_predict.py`` writes and scores are the same computation.
"""
import argparse
import csv
import json
import os
import tempfile

from . import cli, engine
from .datasets import _ID_FIELD as ID_FIELD
from .datasets import example_image_keys, load_answer_vocab, load_dataset
from .features import FEATURE_TYPES, open_features
from .metrics import nlvr2_scores, vqa_accuracy
from .modeling import VisualBertForQuestionAnswering, VisualBertForVisualReasoning
from .processing import NLVR2Dataset, VQADataset

FEATURE_TYPE = {"vqa2": "coco_detectron_fix_100", "nlvr2": "nlvr2_detectron_fix_144"}
HEAD = {"vqa2": VisualBertForQuestionAnswering, "nlvr2": VisualBertForVisualReasoning}


def add_data_args(parser, task):
    g = parser.add_argument_group("data")
    g.add_argument("--input_dir", required=True, help="data root (X_COCO/ for vqa2, X_NLVR/ for nlvr2)")
    g.add_argument("--annotation_dir", default=None,
                   help="annotation files (default: <input_dir>/annotations, then PaddleNLP's dataset home)")
    g.add_argument("--image_feature_type", default=FEATURE_TYPE[task], choices=sorted(FEATURE_TYPES),
                   help=f"region features (default {FEATURE_TYPE[task]})")
    g.add_argument("--max_seq_length", type=int, default=128, help="longest token sequence, [CLS]/[SEP] included")
    add_feature_args(g)
    return g


def add_feature_args(group):
    group.add_argument("--max_regions", type=int, default=None, help="keep at most this many regions per image")
    group.add_argument("--feature_dtype", default="float32", choices=["float32", "float16"],
                       help="dtype regions travel in from the loader workers; float16 halves the traffic "
                            "(the packed store is fp16 on disk anyway); the model computes in float32 or AMP")


def add_predict_args(group, default_split, output_help):
    """Flags the two run_predict.py scripts share (after add_data_args)."""
    group.add_argument("--split", default=default_split, help="split to predict")
    group.add_argument("--output", default=None, help=output_help)
    group.add_argument("--batch_size", type=int, default=64, help="samples per device")
    group.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    group.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    group.add_argument("--use_amp", action="store_true", help="mixed precision inference (GPU only)")
    group.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"], help="AMP compute dtype")
    group.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)


def finish_finetune_args(args):
    """The seed's fine-tuning scripts say --batch_size; the engine counts per-device train batches."""
    args.train_batch_size = args.batch_size
    args.eval_split = None if args.eval_split == "none" else args.eval_split
    return args


def load_for_finetuning(task, args):
    """Setup shared by the fine-tuning scripts: train split (evaluation questions removed), eval
    split (or None) and the model with a head sized for the task."""
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = open_task_features(args)
        train_ds = build(task, args.train_split, args, tokenizer, features, exclude_split=args.eval_split)
        eval_ds = build(task, args.eval_split, args, tokenizer, features) if args.eval_split else None
        num_labels = len(train_ds.answer_vocab) if task == "vqa2" else 2
        model = cli.load_model(HEAD[task], args.model_name_or_path, visual_embedding_dim=features.dim,
                               num_labels=num_labels)
    return train_ds, eval_ds, model


def load_for_prediction(task, args):
    """Setup shared by the run_predict.py scripts: the split's dataset and the trained model."""
    engine.setup_device(args)
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = open_task_features(args)
        dataset = build(task, args.split, args, tokenizer, features)
        model = cli.load_model(HEAD[task], args.model_name_or_path, visual_embedding_dim=features.dim)
    return dataset, model


def open_task_features(args):
    return open_features(args.image_feature_type, args.input_dir, max_regions=args.max_regions)


def check_features_exist(dataset, features, name, split):
    """Fail before any work when an image of ``split`` has no features (one line naming it)."""
    id_field = ID_FIELD[name]
    for ex in dataset:
        for key in example_image_keys(ex):
            if key not in features:
                raise FileNotFoundError(f"{features.path(key)}: no region features for image {key} "
                                        f"(needed by {name} {split} {id_field} {ex[id_field]})")


def build(name, split, args, tokenizer, features, exclude_split=None):
    """The examples of ``split`` as model-ready dataset, features checked up front."""
    examples = load_dataset(name, split, input_dir=args.input_dir, annotation_dir=args.annotation_dir,
                            exclude_split=exclude_split)
    check_features_exist(examples, features, name, split)
    if name == "vqa2":
        return VQADataset(examples, tokenizer, features, answer_vocab=load_answer_vocab(getattr(args, "answer_vocab", None)),
                          max_seq_length=args.max_seq_length, visual_dtype=args.feature_dtype)
    return NLVR2Dataset(examples, tokenizer, features, max_seq_length=args.max_seq_length,
                        visual_dtype=args.feature_dtype)


# ---------------------------------------------------------------------------- VQA2


def _vqa_step(answer_vocab):
    def step(model, batch):
        logits = model(**engine.model_kwargs(model, batch, {"labels": None})).logits
        logits[:, 0] = -float("inf")  # index 0 is <unk>: never a leaderboard answer
        best = logits.argmax(-1).numpy()
        return [(int(q), answer_vocab[int(b)]) for q, b in zip(batch["question_id"].numpy(), best)]

    return step


def vqa_predict(model, dataset, batch_size, num_workers=0):
    """{question_id: answer string} for every question of ``dataset``."""
    rows = engine.predict(model, dataset, dataset.collate_fn(), batch_size, _vqa_step(dataset.answer_vocab),
                          num_workers=num_workers, desc="vqa predict")
    return dict(rows)


def vqa_ground_truth(dataset):
    """Official-metric ground truth from imdb examples (they carry no answer/question types)."""
    return {int(ex["question_id"]): {"answers": list(ex["answers"])} for ex in dataset.examples
            if ex.get("answers") is not None}


def vqa_evaluate(model, dataset, batch_size, num_workers=0):
    predictions = vqa_predict(model, dataset, batch_size, num_workers)
    scores = vqa_accuracy(predictions, vqa_ground_truth(dataset))
    return {"vqa_accuracy": scores["overall"]}


def write_vqa_result(path, predictions):
    """EvalAI's result file: [{"question_id": int, "answer": str}], one per question."""
    rows = [{"question_id": int(q), "answer": a} for q, a in sorted(predictions.items())]
    _atomic_write(path, lambda f: json.dump(rows, f))


# ---------------------------------------------------------------------------- NLVR2


def _nlvr2_step(model, batch):
    logits = model(**engine.model_kwargs(model, batch, {"labels": None})).logits
    return list(zip(batch["identifier"], (logits.argmax(-1).numpy() == 1).tolist()))


def nlvr2_predict(model, dataset, batch_size, num_workers=0):
    """{identifier: True/False} for every example of ``dataset``."""
    rows = engine.predict(model, dataset, dataset.collate_fn(), batch_size, _nlvr2_step,
                          num_workers=num_workers, desc="nlvr2 predict")
    return dict(rows)


def nlvr2_labels(dataset):
    return {ex["identifier"]: bool(ex["label"]) for ex in dataset.examples if ex.get("label") is not None}


def nlvr2_evaluate(model, dataset, batch_size, num_workers=0):
    scores = nlvr2_scores(nlvr2_predict(model, dataset, batch_size, num_workers), nlvr2_labels(dataset))
    return {"accuracy": scores["accuracy"], "consistency": scores["consistency"]}


def write_nlvr2_csv(path, predictions):
    """lil-lab/nlvr's prediction format: ``identifier,True|False`` per line, no header."""

    def write(f):
        w = csv.writer(f, lineterminator="\n")
        for ident, value in predictions.items():
            w.writerow([ident, "True" if value else "False"])

    _atomic_write(path, write)


def _atomic_write(path, write):
    """Write to a temp file beside ``path`` and rename: a failure never leaves a partial file, and
    one of the disk's (full, gone read-only) ends the run with one line."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise SystemExit(f"error: writing {path} failed ({e.strerror or e}); nothing was written") from None
        raise

