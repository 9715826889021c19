"""VQA2 and NLVR2 as tasks: datasets for a split, predictions, official scores, leaderboard files.

The fine-tuning scripts and the prediction scripts both call these, so what training prints as
its evaluation and what ``run_predict.py`` writes and scores are the same computation.
"""
import argparse
import csv
import json
import logging
import os
import tempfile

from . import cli, engine, environment
from .datasets import _ID_FIELD as ID_FIELD
from .datasets import (build_answer_vocab, example_image_keys, load_answer_vocab, load_dataset, read_vqa_json,
                       write_answer_vocab)
from .features import FEATURE_TYPES, open_feature_dir, open_features
from .metrics import nlvr2_scores, vqa_accuracy
from .modeling import VisualBertForQuestionAnswering, VisualBertForVisualReasoning
from .processing import NLVR2Dataset, VQADataset

FEATURE_TYPE = {"vqa2": "coco_detectron_fix_100", "nlvr2": "nlvr2_detectron_fix_144"}
HEAD = {"vqa2": VisualBertForQuestionAnswering, "nlvr2": VisualBertForVisualReasoning}
# The answer vocabulary a VQA run trained with, in its --output_dir; prediction finds it from the model path.
ANSWER_VOCAB_FILE = "answer_vocab.txt"

logger = logging.getLogger("visualbert.tasks")


def add_data_args(parser, task):
    g = parser.add_argument_group("data")
    g.add_argument("--input_dir", default=None,
                   help="data root (X_COCO/ for vqa2, X_NLVR/ for nlvr2); needed unless --features names the features")
    g.add_argument("--annotation_dir", default=None,
                   help="annotation files (default: <input_dir>/annotations, then PaddleNLP's dataset home)")
    g.add_argument("--image_feature_type", default=FEATURE_TYPE[task], choices=sorted(FEATURE_TYPES),
                   help=f"region features (default {FEATURE_TYPE[task]})")
    g.add_argument("--max_seq_length", type=cli.int_range(4), default=128,
                   help="longest token sequence, [CLS]/[SEP] included (at least 4)")
    add_feature_args(g)
    return g


def add_feature_args(group):
    group.add_argument("--features", default=None, metavar="DIR",
                       help="a packed feature store written by python -m visualbert.extract or python -m visualbert.features "
                            "import, used instead of --image_feature_type's files under --input_dir")
    group.add_argument("--max_regions", type=cli.positive_int, default=None, help="keep at most this many regions per image")
    group.add_argument("--feature_dtype", default="float32", choices=["float32", "float16"],
                       help="dtype regions travel in from the loader workers; float16 halves the traffic "
                            "(the packed store is fp16 on disk anyway); the model computes in float32 or AMP")


def add_vqa_json_args(group, sets):
    """Flags for VQA data in the official JSON format: ``--<set>_questions`` / ``--<set>_annotations``
    for each of ``sets`` (plain ``--questions`` / ``--annotations`` for the empty name), and ``--image_key``."""
    for name in sets:
        prefix = f"--{name}_" if name else "--"
        what = f"{name} set" if name else "questions to predict"
        group.add_argument(prefix + "questions", default=None, metavar="Q.json",
                           help=f"{what} in the official VQA questions format, any split name (instead of an imdb split)")
        group.add_argument(prefix + "annotations", default=None, metavar="A.json",
                           help=f"answers to {prefix}questions in the official VQA annotations format"
                                + ("" if name != "eval" else " (needed to score them)")
                                + (" (optional: prints the accuracy)" if not name else ""))
    group.add_argument("--image_key", default="{image_id}",
                       help="template from a question's image_id to its feature key in --features, e.g. "
                            "COCO_val2014_{image_id:012d} (default: {image_id})")


def add_predict_args(group, default_split, output_help):
    """Flags the two run_predict.py scripts share (after add_data_args)."""
    group.add_argument("--split", default=default_split, help="split to predict")
    group.add_argument("--output", default=None, help=output_help)
    group.add_argument("--batch_size", type=cli.positive_int, default=64, help="samples per device")
    group.add_argument("--num_workers", type=cli.non_negative_int, default=2,
                       help="DataLoader worker processes (0 = load in the main process)")
    group.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    group.add_argument("--use_amp", action="store_true", help="mixed precision inference (GPU only)")
    group.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"], help="AMP compute dtype")
    group.add_argument("--seed", type=cli.seed_int, default=42, help=argparse.SUPPRESS)


def finish_finetune_args(parser, args):
    """The seed's fine-tuning scripts say --batch_size; the engine counts per-device train batches."""
    cli.check_training_args(parser, args)
    args.train_batch_size = args.batch_size
    args.eval_split = None if args.eval_split == "none" else args.eval_split
    return args


def load_for_finetuning(task, args):
    """Setup shared by the fine-tuning scripts: train split (evaluation questions removed), eval
    split (or None) and the model with a head sized for the task."""
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = open_task_features(args)
        train_examples = eval_examples = None
        if getattr(args, "train_questions", None) or getattr(args, "eval_questions", None):
            train_examples, eval_examples = vqa_json_examples(args)
            args.train_split, args.eval_split = "train", "eval" if eval_examples else None
        elif task == "vqa2":
            train_examples = load_dataset(task, args.train_split, input_dir=args.input_dir,
                                          annotation_dir=args.annotation_dir, exclude_split=args.eval_split)
        vocab = training_answer_vocab(args, train_examples) if task == "vqa2" else None
        train_ds = build(task, args.train_split, args, tokenizer, features, exclude_split=args.eval_split,
                         examples=train_examples, answer_vocab=vocab)
        eval_ds = None
        if args.eval_split:
            eval_ds = build(task, args.eval_split, args, tokenizer, features, examples=eval_examples, answer_vocab=vocab)
        num_labels = len(train_ds.answer_vocab) if task == "vqa2" else 2
        model = cli.load_model(HEAD[task], args.model_name_or_path, visual_embedding_dim=features.dim,
                               cpu_kernels=args.cpu_kernels, num_labels=num_labels)
    return train_ds, eval_ds, model


def load_for_prediction(task, args):
    """Setup shared by the run_predict.py scripts: the split's dataset and the trained model."""
    environment.setup_device(args)
    with cli.user_errors():
        tokenizer = cli.tokenizer_from_args(args)
        features = open_task_features(args)
        examples = vocab = None
        if getattr(args, "questions", None):
            examples = read_vqa_json(args.questions, args.annotations, args.image_key, split="questions")
            args.split = os.path.basename(args.questions)
        elif getattr(args, "annotations", None):
            raise ValueError("--annotations needs --questions")
        if task == "vqa2":
            vocab = prediction_answer_vocab(args)
        dataset = build(task, args.split, args, tokenizer, features, examples=examples, answer_vocab=vocab)
        model = cli.load_model(HEAD[task], args.model_name_or_path, visual_embedding_dim=features.dim,
                               new_head=False, cpu_kernels=args.cpu_kernels)
        if task == "vqa2" and model.config.num_labels != len(vocab):
            raise ValueError(f"{args.model_name_or_path} predicts {model.config.num_labels} answers, but the answer "
                             f"vocabulary has {len(vocab)}; pass the run's {ANSWER_VOCAB_FILE} as --answer_vocab")
    return dataset, model


def open_task_features(args):
    """The features a script reads (--features, else --image_feature_type under --input_dir), said in one line."""
    if getattr(args, "features", None):
        features = open_feature_dir(args.features, max_regions=args.max_regions)
        environment.log0(f"features: packed store {args.features}")
        return features
    if not args.input_dir:
        raise ValueError("--input_dir (the data root with the features) is needed unless --features names a feature store")
    features = open_features(args.image_feature_type, args.input_dir, max_regions=args.max_regions)
    if features.packed:
        where = "packed store " + ", ".join(p.directory for p in features.packed)
    else:
        where = (f"per-image .npy files under {features.layout.root_dir(features.input_dir)} "
                 "(no packed store; `python -m visualbert.features pack` makes one)")
    environment.log0(f"features: {args.image_feature_type} from {where}")
    return features


def vqa_json_examples(args):
    """(train, eval or None) examples from ``--train_questions`` / ``--eval_questions`` (official VQA JSON);
    evaluation questions are removed from training, with a line saying how many."""
    for name in ("train", "eval"):
        if bool(getattr(args, f"{name}_questions")) != bool(getattr(args, f"{name}_annotations")):
            raise ValueError(f"--{name}_questions and --{name}_annotations go together (the answers are the labels)")
    if not args.train_questions:
        raise ValueError("--eval_questions needs --train_questions (the data to train on)")
    train = read_vqa_json(args.train_questions, args.train_annotations, args.image_key, split="train")
    if not args.eval_questions:
        return train, None
    held_out = read_vqa_json(args.eval_questions, args.eval_annotations, args.image_key, split="eval")
    ids = {ex["question_id"] for ex in held_out}
    kept = [ex for ex in train if ex["question_id"] not in ids]
    if len(kept) < len(train):
        logger.warning("%s: removed %d questions that are also in %s (held out for evaluation); %d remain",
                       args.train_questions, len(train) - len(kept), args.eval_questions, len(kept))
    if not kept:
        raise ValueError(f"{args.train_questions}: no questions left after removing those of {args.eval_questions}")
    return kept, held_out


def training_answer_vocab(args, train_examples):
    """The answers a VQA run classifies over: the shipped 3,129, a file, or ``build[:K]`` from the
    training answers. The training script saves it in the run's directory (``vqa_run_files``)."""
    spec = getattr(args, "answer_vocab", None)
    if spec is None:
        vocab = load_answer_vocab()
    elif spec == "build" or spec.startswith("build:"):
        top_k = spec[len("build:"):] if ":" in spec else None
        if top_k is not None and not (top_k.isdigit() and int(top_k) >= 1):
            raise ValueError(f"--answer_vocab {spec}: expected build or build:K with K >= 1")
        vocab = build_answer_vocab(train_examples, None if top_k is None else int(top_k))
        environment.log0(f"answer vocabulary: <unk> and the {len(vocab) - 1} most frequent training answers")
    else:
        vocab = load_answer_vocab(spec)
    return vocab


def vqa_run_files(train_ds):
    """What a VQA run keeps beside its checkpoints: the answer vocabulary, always (even the shipped
    one), so prediction reads the run's own and never a file an earlier run left there."""
    return {ANSWER_VOCAB_FILE: lambda path: write_answer_vocab(path, train_ds.answer_vocab)}


def prediction_answer_vocab(args):
    """``--answer_vocab``, else the run's saved vocabulary beside the model (RUN/best -> RUN/), else the shipped one."""
    if args.answer_vocab:
        return load_answer_vocab(args.answer_vocab)
    model = os.path.normpath(args.model_name_or_path)
    here = model if os.path.isdir(model) else os.path.dirname(model)
    for directory in (here, os.path.dirname(here)):
        path = os.path.join(directory or ".", ANSWER_VOCAB_FILE)
        if os.path.isfile(path):
            return load_answer_vocab(path)
    return load_answer_vocab()


def check_features_exist(dataset, features, name, split):
    """Fail before any work when an image of ``split`` has no features (one line naming it)."""
    id_field = ID_FIELD[name]
    for ex in dataset:
        for key in example_image_keys(ex):
            if key not in features:
                raise FileNotFoundError(f"{features.path(key)}: no region features for image {key} "
                                        f"(needed by {name} {split} {id_field} {ex[id_field]})")


def build(name, split, args, tokenizer, features, exclude_split=None, examples=None, answer_vocab=None):
    """The examples of ``split`` (or the given ``examples``) as model-ready dataset, features checked up front."""
    if examples is None:
        examples = load_dataset(name, split, input_dir=args.input_dir, annotation_dir=args.annotation_dir,
                                exclude_split=exclude_split)
    check_features_exist(examples, features, name, split)
    if name == "vqa2":
        if answer_vocab is None:
            answer_vocab = load_answer_vocab(getattr(args, "answer_vocab", None))
        return VQADataset(examples, tokenizer, features, answer_vocab=answer_vocab,
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
    """Official-metric ground truth from the examples (imdb examples carry no answer/question types)."""
    return {int(ex["question_id"]): {"answers": list(ex["answers"]), "answer_type": ex.get("answer_type"),
                                     "question_type": ex.get("question_type")}
            for ex in dataset.examples if ex.get("answers") is not None}


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

