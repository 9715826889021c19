"""VCR as a task: fine-tuning Q->A or QA->R, the leaderboard file, and masked-LM pre-training.

Data layout (as the original's configs: ``vcr_annots_dir`` X_VCR, ``vcr_image_dir`` X_VCR/vcr1images)::

    <input_dir>/{train,val,test}.jsonl          (or --annotation_dir)
    <input_dir>/vcr1images/<movie>/<image>.jpg  and <image>.json (metadata; or --image_dir)

The image encoder is part of the model (``visualbert.vcr_detector``), so there are no feature files:
images are read as training goes, and the image size is the model config's.
"""
import csv
import json
import os

import numpy as np
import paddle
import paddle.nn.functional as F

from . import engine, environment, pretrained
from .atomic import write_file
from .errors import user_errors
from .formats.vcr import read_vcr, vcr_csv_rows
from .metrics import vcr_scores
from .vcr_dataset import VCRDataset, VCRPretrainDataset
from .vcr_detector import VisualBertForVCR, VisualBertForVCRPreTraining

__all__ = ["finetune", "predict", "pretrain_datasets", "split_items", "image_dir"]

_VCR_HEADS = ("VisualBertForVCR", "VisualBertForVCRPreTraining")


def annotation_file(args, split):
    root = args.annotation_dir or args.input_dir
    if not root:
        raise ValueError("--input_dir (the VCR root with {train,val,test}.jsonl and vcr1images/) is needed")
    return os.path.join(root, f"{split}.jsonl")


def image_dir(args):
    if args.image_dir:
        return args.image_dir
    if not args.input_dir:
        raise ValueError("--input_dir or --image_dir (the vcr1images/ directory) is needed")
    return os.path.join(args.input_dir, "vcr1images")


def split_items(args, split, need_labels=True):
    return read_vcr(annotation_file(args, split), need_labels=need_labels)


def _load(cls, name_or_path, args, new_head):
    model = pretrained.load_model(cls, name_or_path, new_head=new_head, cpu_kernels=args.cpu_kernels)
    architecture = (getattr(model.config, "architectures", None) or [None])[0]
    if os.path.isdir(str(name_or_path)) and architecture not in _VCR_HEADS:
        environment.log0(f"note: {name_or_path} holds no VCR image encoder (detector.*); it starts untrained "
                         "(convert an original VCR .th with python -m visualbert.convert to keep the released one)")
    if getattr(args, "class_loss_ratio", None) is not None:
        model.detector_settings["class_loss_ratio"] = args.class_loss_ratio
        model.config.vcr_detector = dict(model.detector_settings)  # saved with the model
    return model


def _dataset(args, items, tokenizer, model, mode, seed, train=False, answer=None):
    return VCRDataset(items, tokenizer, image_dir(args), mode, answer=answer, max_seq_length=args.max_seq_length,
                      image_size=model.detector_settings["image_size"], train=train, seed=seed)


# ---------------------------------------------------------------------------- fine-tuning


def finetune(args, training):
    """What VCR/run_vcr.py does: fine-tune Q->A (mode answer) or QA->R (mode rationale) as ``training`` says."""
    if args.mode is None:
        raise SystemExit("error: mode (answer: Q->A, or rationale: QA->R) is needed")
    environment.setup_device(training, args)
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        model = _load(VisualBertForVCR, args.model_name_or_path, args, new_head=True)
        train_ds = _dataset(args, split_items(args, args.train_split), tokenizer, model, args.mode, training.seed,
                            train=True)
        eval_ds = None
        if args.eval_split:
            eval_ds = _dataset(args, split_items(args, args.eval_split), tokenizer, model, args.mode, training.seed)
    scorer = None
    if eval_ds is not None:
        batch_size, workers = training.eval_batch_size, training.num_workers
        scorer = lambda m: {"accuracy": accuracy(m, eval_ds, batch_size, workers)}  # noqa: E731
    return engine.train(training, model, train_ds, train_ds.collate_fn(), {"loss": lambda b: len(b["input_ids"])},
                        scorer=scorer, best_metric="accuracy", settings=args.to_dict())


def _probabilities_step(model, batch):
    logits = model(**engine.model_kwargs(model, batch, {"labels": None})).logits
    probs = F.softmax(logits.astype("float32"), axis=-1).numpy()
    return list(zip(batch["annot_id"], probs.tolist()))


def choice_probabilities(model, dataset, batch_size, num_workers=0, desc="vcr predict"):
    """{annot_id: [4 probabilities]} for every item of ``dataset``."""
    rows = engine.predict(model, dataset, dataset.collate_fn(), batch_size, _probabilities_step,
                          num_workers=num_workers, desc=desc)
    return dict(rows)


def accuracy(model, dataset, batch_size, num_workers=0):
    """Share of items whose highest-scored choice is the labelled one (Q->A or QA->R)."""
    probs = choice_probabilities(model, dataset, batch_size, num_workers, desc="vcr eval")
    label = f"{dataset.mode}_label"
    return float(np.mean([int(np.argmax(probs[i["annot_id"]])) == i[label] for i in dataset.items]))


# ---------------------------------------------------------------------------- the leaderboard file


def predict(args, prediction):
    """What VCR/run_predict.py does: the leaderboard CSV for ``prediction.split``, and the scores when it has labels.

    The answer model scores the four answers; the rationale model scores the four rationales once
    per answer (the context ending with answer 0, 1, 2, 3), as the leaderboard asks.
    """
    environment.setup_device(prediction, args)
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        items = split_items(args, prediction.split, need_labels=False)
        answer_model = _load(VisualBertForVCR, prediction.answer_model, args, new_head=False)
        rationale_model = _load(VisualBertForVCR, prediction.rationale_model, args, new_head=False)
        seed = prediction.seed
        answer_ds = _dataset(args, items, tokenizer, answer_model, "answer", seed)
        rationale_ds = [_dataset(args, items, tokenizer, rationale_model, "rationale", seed, answer=a)
                        for a in range(4)]
    batch_size, workers = prediction.batch_size, prediction.num_workers
    with paddle.amp.auto_cast(enable=prediction.use_amp, dtype=prediction.amp_dtype):
        answers = choice_probabilities(answer_model, answer_ds, batch_size, workers, "vcr answers")
        rationales = [choice_probabilities(rationale_model, ds, batch_size, workers,
                                           f"vcr rationales | answer {a}") for a, ds in enumerate(rationale_ds)]
    if not environment.is_main():
        return

    predictions = {i["annot_id"]: {"answer": answers[i["annot_id"]],
                                   "rationale": [r[i["annot_id"]] for r in rationales]} for i in items}
    write_vcr_csv(prediction.output, predictions)
    print(f"wrote {len(predictions)} rows to {prediction.output}")
    labels = {i["annot_id"]: (i["answer_label"], i["rationale_label"]) for i in items
              if i["answer_label"] is not None and i["rationale_label"] is not None}
    if len(labels) == len(items):
        scores = vcr_scores(predictions, labels)
        print(json.dumps({"split": prediction.split, **scores}))


# ---------------------------------------------------------------------------- pre-training


def pretrain_datasets(args, tokenizer, model, seed):
    """(train, eval or None) masked-LM datasets of VCR for run_pretrain.py --dataset vcr."""
    common = dict(max_seq_length=args.max_seq_length, image_size=model.detector_settings["image_size"],
                  seed=seed, mask_prob=args.mask_prob)
    train = VCRPretrainDataset(split_items(args, args.train_split), tokenizer, image_dir(args), train=True, **common)
    evaluation = None
    if args.eval_split:
        evaluation = VCRPretrainDataset(split_items(args, args.eval_split), tokenizer, image_dir(args), **common)
    return train, evaluation


def pretrain_model(args):
    return _load(VisualBertForVCRPreTraining, args.model_name_or_path, args, new_head=True)


def write_vcr_csv(path, predictions):
    """The VCR leaderboard CSV (``formats.vcr.VCR_CSV_COLUMNS``) of {annot_id: {"answer", "rationale"}}."""
    write_file(path, lambda f: csv.writer(f, lineterminator="\n").writerows(vcr_csv_rows(predictions)))
