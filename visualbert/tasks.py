"""The tasks: pretraining, VQA2, NLVR2 and VCR (its own module, ``vcr_tasks``) — datasets for a split, the training run, predictions, official
scores and leaderboard files.

The scripts parse their command line (``cli``) into settings objects (``training_args``) and call
``pretrain`` / ``finetune`` / ``predict`` here; Python code builds the same objects and calls them too.
The fine-tuning and prediction scripts share this code, so what training prints as its
evaluation and what ``run_predict.py`` writes and scores are the same computation.
"""
import csv
import itertools
import json
import logging
import os

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F

from . import engine, environment, inference, pretrained, provenance, vcr_tasks
from .atomic import write_file
from .errors import user_errors
from .examples import (DEFAULT_FEATURE_TYPE, ID_FIELD, build_answer_vocab, example_image_keys, load_dataset,
                       read_vqa_json)
from .features import open_feature_dir, open_features
from .formats.vqa import read_answer_vocab, read_image_map, write_answer_vocab
from .lifetime import interrupts_in_one_line
from .metrics import nlvr2_scores, vqa_accuracy
from .modeling import VisualBertForPreTraining, VisualBertForQuestionAnswering, VisualBertForVisualReasoning
from .inputs import (CaptionPretrainDataset, NLVR2Dataset, NLVR2PretrainDataset, VQADataset,
                         VQAPretrainDataset)

HEAD = {"vqa2": VisualBertForQuestionAnswering, "nlvr2": VisualBertForVisualReasoning}
# The answer vocabulary a VQA run trained with, in its --output_dir; prediction finds it from the model path.
ANSWER_VOCAB_FILE = "answer_vocab.txt"
PRETRAIN_SPLITS = {  # corpus -> (train, eval) defaults
    "coco_captions": ("train", "val"),
    "vqa2": ("train", "minival"),
    "nlvr2": ("train", "dev"),
    "vcr": ("train", "val"),
}

logger = logging.getLogger("visualbert.tasks")


# ---------------------------------------------------------------------------- fine-tuning and prediction


def finetune(task, args, training):
    """What run_vqa2.py / run_nlvr2.py / run_vcr.py do: fine-tune on ``task`` (vqa2, nlvr2 or vcr) with the
    data and model of ``args`` (``TaskArguments``) as ``training`` (``TrainingArguments``) says, scoring
    ``args.eval_split`` as training goes; returns the last evaluation's scores."""
    with interrupts_in_one_line():  # while loading; the training loop says where it stopped itself
        if task == "vcr":
            return vcr_tasks.finetune(args, training)
        return _finetune(task, args, training)


def _finetune(task, args, training):
    environment.setup_device(training, args)
    train_ds, eval_ds, model = load_for_finetuning(task, args)
    scorer = None
    if eval_ds is not None:
        score = score_vqa if task == "vqa2" else score_nlvr2
        scorer = lambda m: score(m, eval_ds, training.eval_batch_size, training.num_workers)  # noqa: E731
    vqa = {"forward_kwargs": {"loss_type": args.loss}, "run_files": vqa_run_files(train_ds)} if task == "vqa2" else {}
    return engine.train(training, model, train_ds, train_ds.collate_fn(), {"loss": lambda b: len(b["input_ids"])},
                        scorer=scorer, best_metric="vqa_accuracy" if task == "vqa2" else "accuracy",
                        settings=run_settings(args, model), **vqa)


def run_settings(args, model=None):
    """What run_config.json records of a task next to the training settings (and --resume compares):
    every ``TaskArguments`` field, and how ``model``'s features were made when it read features."""
    settings = args.to_dict()
    made = getattr(model.config, provenance.PROVENANCE_KEY, None) if model is not None else None
    if made is not None:
        settings[provenance.PROVENANCE_KEY] = made
    return settings


def predict(task, args, prediction):
    """What the run_predict.py scripts do: write ``prediction.output`` for ``prediction.split`` with the
    data and model of ``args``, and print the scores when the split has labels."""
    written = []
    with interrupts_in_one_line(after=lambda: None if written else f"{prediction.output} was not written"):
        if task == "vcr":
            vcr_tasks.predict(args, prediction)
        else:
            _predict(task, args, prediction, written)


def _predict(task, args, prediction, written):
    dataset, model = load_for_prediction(task, args, prediction)
    with paddle.amp.auto_cast(enable=prediction.use_amp, dtype=prediction.amp_dtype):
        if task == "vqa2":
            predictions = vqa_predict(model, dataset, prediction.batch_size, prediction.num_workers)
        else:
            predictions = nlvr2_predict(model, dataset, prediction.batch_size, prediction.num_workers)
    if not environment.is_main():
        return
    if task == "vqa2":
        write_vqa_result(prediction.output, predictions)
        written.append(prediction.output)
        print(f"wrote {len(predictions)} answers to {prediction.output}")
        truth = vqa_ground_truth(dataset)
        if truth:
            print(json.dumps({"split": prediction.split, "vqa_accuracy": vqa_accuracy(predictions, truth)["overall"]}))
    else:
        write_nlvr2_csv(prediction.output, predictions)
        written.append(prediction.output)
        print(f"wrote {len(predictions)} predictions to {prediction.output}")
        labels = nlvr2_labels(dataset)
        if labels:
            scores = nlvr2_scores(predictions, labels)
            print(json.dumps({"split": prediction.split, "accuracy": scores["accuracy"],
                              "consistency": scores["consistency"]}))


def load_for_finetuning(task, args):
    """Setup shared by the fine-tuning scripts: train split (evaluation questions removed), eval
    split (or None) and the model with a head sized for the task."""
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        features = open_task_features(args, task)
        train_examples = eval_examples = None
        if getattr(args, "train_questions", None) or getattr(args, "eval_questions", None):
            train_examples, eval_examples = vqa_json_examples(args)
            args.train_split, args.eval_split = "train", "eval" if eval_examples else None
        elif task == "vqa2":
            train_examples = load_dataset(task, args.train_split, input_dir=args.input_dir,
                                          annotation_dir=args.annotation_dir, exclude_split=args.eval_split)
        vocab = training_answer_vocab(args, train_examples) if task == "vqa2" else None
        num_labels = len(vocab) if task == "vqa2" else 2
        model, spatial = pretrained.load_task_model(HEAD[task], args.model_name_or_path, features,
                                                 cpu_kernels=args.cpu_kernels, num_labels=num_labels)
        train_ds = build(task, args.train_split, args, tokenizer, features, exclude_split=args.eval_split,
                         examples=train_examples, answer_vocab=vocab, spatial=spatial,
                         key_origin=key_origin(args, "train"), labels_for="--train_split")
        eval_ds = None
        if args.eval_split:
            eval_ds = build(task, args.eval_split, args, tokenizer, features, examples=eval_examples, answer_vocab=vocab,
                            spatial=spatial, key_origin=key_origin(args, "eval"), labels_for="--eval_split")
        check_sequence_length(args, model)
    return train_ds, eval_ds, record_provenance(model, features)


def load_for_prediction(task, args, prediction):
    """Setup shared by the run_predict.py scripts: the split's dataset and the trained model."""
    environment.setup_device(prediction, args)
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        features = open_task_features(args, task)
        examples = vocab = None
        if getattr(args, "questions", None):
            template, image_map = vqa_image_keys(args)
            examples = read_vqa_json(args.questions, args.annotations, template, split="questions", image_map=image_map)
            prediction.split = os.path.basename(args.questions)
        elif getattr(args, "annotations", None):
            raise ValueError("--annotations needs --questions")
        if task == "vqa2":
            vocab = prediction_answer_vocab(args)
        engine_name = _prediction_engine(prediction, args.model_name_or_path)
        model, spatial = pretrained.load_task_model(HEAD[task], args.model_name_or_path, features, new_head=False,
                                                 cpu_kernels=args.cpu_kernels and engine_name == "dygraph")
        check_sequence_length(args, model)
        dataset = build(task, prediction.split, args, tokenizer, features, examples=examples, answer_vocab=vocab,
                        spatial=spatial, key_origin=key_origin(args))
        if task == "vqa2" and model.config.num_labels != len(vocab):
            raise ValueError(f"{args.model_name_or_path} predicts {model.config.num_labels} answers, but the answer "
                             f"vocabulary has {len(vocab)}; pass the run's {ANSWER_VOCAB_FILE} as --answer_vocab")
        if engine_name in inference.EXPORTED_ENGINES:
            model = inference.load_inference_model(HEAD[task], pretrained.resolve_model_path(args.model_name_or_path),
                                                   model=model, engine=engine_name)
    return dataset, model


def check_sequence_length(args, model):
    """Refuse a --max_seq_length the model's position table cannot index (else a mid-step Paddle error)."""
    limit = model.config.max_position_embeddings
    if args.max_seq_length > limit:
        raise ValueError(f"--max_seq_length {args.max_seq_length}: {args.model_name_or_path} has positions for at most "
                         f"{limit} tokens (max_position_embeddings); pass --max_seq_length {limit} or less")

def _prediction_engine(prediction, model_name_or_path):
    """--engine, or the default for the device prediction runs on and the model (never a predictor in a
    training process: only the run_predict.py scripts come here)."""
    device = paddle.get_device().split(":")[0]
    name = prediction.engine or inference.default_engine(
        device, processes=dist.get_world_size(),
        model_dir=os.path.isdir(pretrained.resolve_model_path(model_name_or_path)))
    if name in inference.EXPORTED_ENGINES and device != "cpu":
        raise ValueError(f"--engine {name} runs on the CPU; pass --device cpu or --engine dygraph")
    if name in inference.EXPORTED_ENGINES and dist.get_world_size() > 1:
        raise ValueError(f"--engine {name} predicts in one process; pass --engine dygraph under "
                         "paddle.distributed.launch")
    return name


def record_provenance(model, features):
    """Every model a run saves (best/, model/, checkpoints) says in its config how its features were made
    (and run_config.json too, see ``run_settings``)."""
    setattr(model.config, provenance.PROVENANCE_KEY, provenance.of_store(features))
    return model


def open_task_features(args, name=None):
    """The features a script reads (--features, else --image_feature_type under --input_dir; without it,
    the default type of task or corpus ``name``), said in one line."""
    if getattr(args, "features", None):
        features = open_feature_dir(args.features, max_regions=args.max_regions)
        environment.log0(f"features: packed store {args.features}")
        return features
    if not args.input_dir:
        raise ValueError("--input_dir (the data root with the features) is needed unless --features names a feature store")
    feature_type = args.image_feature_type or DEFAULT_FEATURE_TYPE.get(name)
    if not feature_type:
        raise ValueError("--image_feature_type (the region features under --input_dir) or --features is needed")
    features = open_features(feature_type, args.input_dir, max_regions=args.max_regions)
    if features.packed:
        where = "packed store " + ", ".join(p.directory for p in features.packed)
    else:
        where = (f"per-image .npy files under {features.layout.root_dir(features.input_dir)} "
                 "(no packed store; `python -m visualbert.features pack` makes one)")
    environment.log0(f"features: {feature_type} from {where}")
    return features


def vqa_json_examples(args):
    """(train, eval or None) examples from ``--train_questions`` / ``--eval_questions`` (official VQA JSON);
    evaluation questions are removed from training, with a line saying how many."""
    for name in ("train", "eval"):
        if bool(getattr(args, f"{name}_questions")) != bool(getattr(args, f"{name}_annotations")):
            raise ValueError(f"--{name}_questions and --{name}_annotations go together (the answers are the labels)")
    if not args.train_questions:
        raise ValueError("--eval_questions needs --train_questions (the data to train on)")
    template, image_map = vqa_image_keys(args, "train")
    train = read_vqa_json(args.train_questions, args.train_annotations, template, split="train", image_map=image_map)
    if not args.eval_questions:
        return train, None
    template, image_map = vqa_image_keys(args, "eval")
    held_out = read_vqa_json(args.eval_questions, args.eval_annotations, template, split="eval", image_map=image_map)
    ids = {ex["question_id"] for ex in held_out}
    kept = [ex for ex in train if ex["question_id"] not in ids]
    if len(kept) < len(train):
        logger.warning("%s: removed %d questions that are also in %s (held out for evaluation); %d remain",
                       args.train_questions, len(train) - len(kept), args.eval_questions, len(kept))
    if not kept:
        raise ValueError(f"{args.train_questions}: no questions left after removing those of {args.eval_questions}")
    return kept, held_out


def vqa_image_keys(args, name=""):
    """(template, image map or None) that make the feature keys of set ``name``'s questions (train, eval,
    or "" for prediction's --questions): ``--<name>_image_key``, falling back to ``--image_key``."""
    template = getattr(args, f"{name}_image_key", None) if name else None
    image_map = read_image_map(args.image_map) if getattr(args, "image_map", None) else None
    return template or args.image_key, image_map


def key_origin(args, name=""):
    """How the feature keys of set ``name`` were made, for the line that says one is missing."""
    if not getattr(args, f"{name}_questions" if name else "questions", None):
        return None
    if getattr(args, "image_map", None):
        return f"--image_map {args.image_map}"
    flag = f"--{name}_image_key" if name and getattr(args, f"{name}_image_key", None) else "--image_key"
    return f"{flag} {vqa_image_keys(args, name)[0]!r}"


def training_answer_vocab(args, train_examples):
    """The answers a VQA run classifies over: the shipped 3,129, a file, or ``build[:K]`` from the
    training answers. The training script saves it in the run's directory (``vqa_run_files``)."""
    spec = getattr(args, "answer_vocab", None)
    if spec is None:
        vocab = read_answer_vocab()
    elif spec == "build" or spec.startswith("build:"):
        top_k = spec[len("build:"):] if ":" in spec else None
        if top_k is not None and not (top_k.isdigit() and int(top_k) >= 1):
            raise ValueError(f"--answer_vocab {spec}: expected build or build:K with K >= 1")
        vocab = build_answer_vocab(train_examples, None if top_k is None else int(top_k))
        environment.log0(f"answer vocabulary: <unk> and the {len(vocab) - 1} most frequent training answers")
    else:
        vocab = read_answer_vocab(spec)
    return vocab


def vqa_run_files(train_ds):
    """What a VQA run keeps beside its checkpoints: the answer vocabulary, always (even the shipped
    one), so prediction reads the run's own and never a file an earlier run left there."""
    return {ANSWER_VOCAB_FILE: lambda path: write_answer_vocab(path, train_ds.answer_vocab)}


def prediction_answer_vocab(args):
    """``--answer_vocab``, else the run's saved vocabulary beside the model (RUN/best -> RUN/), else the shipped one."""
    if args.answer_vocab:
        return read_answer_vocab(args.answer_vocab)
    model = os.path.normpath(args.model_name_or_path)
    here = model if os.path.isdir(model) else os.path.dirname(model)
    for directory in (here, os.path.dirname(here)):
        path = os.path.join(directory or ".", ANSWER_VOCAB_FILE)
        if os.path.isfile(path):
            return read_answer_vocab(path)
    return read_answer_vocab()


LABEL_FIELD = {"vqa2": "answers", "nlvr2": "label"}


def check_labelled(examples, name, split, flag):
    """Refuse to train or score on a split without labels (VQA test, NLVR2 test2) in one line."""
    field = LABEL_FIELD.get(name)
    if field and any(ex.get(field) is None for ex in examples):
        raise ValueError(f"{flag} {split}: the {name} {split} split has no {'answers' if name == 'vqa2' else 'labels'} "
                         f"(a test split is unlabelled), so it cannot be {'trained' if 'train' in flag else 'scored'} "
                         "on; pick a labelled split (predict on it with run_predict.py)")


def check_features_exist(dataset, features, name, split, key_origin=None):
    """Fail before any work when an image of ``split`` has no features: one line naming it, a few keys
    the store does have, and ``key_origin`` (the flag that made the keys) when given."""
    id_field = ID_FIELD[name]
    for ex in dataset:
        for key in example_image_keys(ex):
            if key not in features:
                some = list(itertools.islice(features.keys(), 3))
                have = f"; the features have keys such as {', '.join(map(repr, some))}" if some else ""
                made = f"; the key was made with {key_origin}" if key_origin else ""
                raise FileNotFoundError(f"{features.path(key)}: no region features for image {key} "
                                        f"(needed by {name} {split} {id_field} {ex[id_field]}){have}{made}")


def build(name, split, args, tokenizer, features, exclude_split=None, examples=None, answer_vocab=None, spatial=False,
          key_origin=None, labels_for=None):
    """The examples of ``split`` (or the given ``examples``) as model-ready dataset, features checked up
    front; ``spatial``: append each region's box geometry (the model's ``add_spatial_features``);
    ``labels_for`` (a flag such as --train_split) says the split must be labelled."""
    if examples is None:
        examples = load_dataset(name, split, input_dir=args.input_dir, annotation_dir=args.annotation_dir,
                                exclude_split=exclude_split)
    if labels_for:
        check_labelled(examples, name, split, labels_for)
    check_features_exist(examples, features, name, split, key_origin)
    if name == "vqa2":
        if answer_vocab is None:
            answer_vocab = read_answer_vocab(getattr(args, "answer_vocab", None))
        return VQADataset(examples, tokenizer, features, answer_vocab=answer_vocab,
                          max_seq_length=args.max_seq_length, visual_dtype=args.feature_dtype, spatial=spatial)
    return NLVR2Dataset(examples, tokenizer, features, max_seq_length=args.max_seq_length,
                        visual_dtype=args.feature_dtype, spatial=spatial)


# ---------------------------------------------------------------------------- pretraining


def pretrain(args, training):
    """What run_pretrain.py does: masked LM (and image-text matching where the corpus has it) on
    ``args.dataset``, as ``training`` says; returns the last evaluation's scores."""
    with interrupts_in_one_line():  # while loading; the training loop says where it stopped itself
        return _pretrain(args, training)


def _pretrain(args, training):
    if args.dataset not in PRETRAIN_SPLITS:
        raise SystemExit(f"error: dataset {args.dataset!r}: expected one of {', '.join(sorted(PRETRAIN_SPLITS))}")
    environment.setup_device(training, args)
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        if args.dataset == "vcr":  # images through the model's own encoder, no feature files
            model = vcr_tasks.pretrain_model(args)
            train_ds, eval_ds = vcr_tasks.pretrain_datasets(args, tokenizer, model, seed=training.seed)
        else:
            features = open_task_features(args, args.dataset)
            model, spatial = pretrained.load_task_model(VisualBertForPreTraining, args.model_name_or_path, features,
                                                     cpu_kernels=args.cpu_kernels)
            model = record_provenance(model, features)
            check_sequence_length(args, model)
            train_ds = pretrain_dataset(args, args.train_split, tokenizer, features, seed=training.seed,
                                        exclude=args.eval_split, spatial=spatial)
            eval_ds = (pretrain_dataset(args, args.eval_split, tokenizer, features, seed=training.seed, spatial=spatial)
                       if args.eval_split else None)

    loss_terms = {"masked_lm_loss": lambda b: int((b["labels"] != -100).sum())}
    if uses_matching(args):  # with --no_nlvr2_label the label is in the batch but never trained on
        loss_terms["sentence_image_loss"] = lambda b: len(b["input_ids"])

    scorer = None
    if eval_ds is not None:
        if len(eval_ds) > args.max_eval_samples:  # a fixed, seeded subset keeps evaluation short
            keep = np.random.default_rng(training.seed).choice(len(eval_ds), args.max_eval_samples, replace=False)
            eval_ds = paddle.io.Subset(eval_ds, sorted(keep.tolist()))
        scorer = pretrain_scorer(args, eval_ds, train_ds.collate_fn(), training.eval_batch_size)
    return engine.train(training, model, train_ds, train_ds.collate_fn(), loss_terms, scorer=scorer,
                        best_metric="mlm_accuracy" if scorer else None, forward_kwargs={"predict_masked_only": True},
                        settings=run_settings(args, model))


def pretrain_dataset(args, split, tokenizer, features, seed, exclude=None, spatial=False):
    examples = load_dataset(args.dataset, split, input_dir=args.input_dir, annotation_dir=args.annotation_dir,
                            exclude_split=exclude)
    if args.dataset == "nlvr2" and uses_matching(args):  # the label is trained on (VQA pretraining needs no answer)
        check_labelled(examples, args.dataset, split, "--train_split" if split == args.train_split else "--eval_split")
    check_features_exist(examples, features, args.dataset, split)
    common = dict(max_seq_length=args.max_seq_length, mask_prob=args.mask_prob, seed=seed,
                  visual_dtype=args.feature_dtype, spatial=spatial)
    if args.dataset == "coco_captions":
        return CaptionPretrainDataset(examples, tokenizer, features, **common)
    if args.dataset == "vqa2":
        return VQAPretrainDataset(examples, tokenizer, features, **common)
    return NLVR2PretrainDataset(examples, tokenizer, features, **common)


def uses_matching(args):
    return args.dataset == "coco_captions" or (args.dataset == "nlvr2" and not args.no_nlvr2_label)


def pretrain_eval_step(with_matching):
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


def pretrain_scorer(args, eval_ds, collate_fn, batch_size):
    """Masked-LM loss and accuracy over the masked tokens, and matching accuracy, on eval_ds."""
    step = pretrain_eval_step(uses_matching(args))

    def score(model):
        rows = engine.predict(model, eval_ds, collate_fn, batch_size, step)
        loss, count, right = (sum(r[i] for r in rows) for i in range(3))
        result = {"mlm_loss": loss / max(count, 1), "mlm_accuracy": right / max(count, 1)}
        if uses_matching(args):
            result["matching_accuracy"] = float(np.mean([r[3] for r in rows]))
        return result

    return score


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


def score_vqa(model, dataset, batch_size, num_workers=0):
    predictions = vqa_predict(model, dataset, batch_size, num_workers)
    scores = vqa_accuracy(predictions, vqa_ground_truth(dataset))
    return {"vqa_accuracy": scores["overall"]}


def write_vqa_result(path, predictions):
    """EvalAI's result file: [{"question_id": int, "answer": str}], one per question."""
    rows = [{"question_id": int(q), "answer": a} for q, a in sorted(predictions.items())]
    write_file(path, lambda f: json.dump(rows, f))


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


def score_nlvr2(model, dataset, batch_size, num_workers=0):
    scores = nlvr2_scores(nlvr2_predict(model, dataset, batch_size, num_workers), nlvr2_labels(dataset))
    return {"accuracy": scores["accuracy"], "consistency": scores["consistency"]}


def write_nlvr2_csv(path, predictions):
    """lil-lab/nlvr's prediction format: ``identifier,True|False`` per line, no header."""

    def write(f):
        w = csv.writer(f, lineterminator="\n")
        for ident, value in predictions.items():
            w.writerow([ident, "True" if value else "False"])

    write_file(path, write)

