"""The Flickr30K Entities task: phrase grounding — data for a split, the training run, ranked-box
predictions, and R@K as the original code scored it.

``Flickr30K/run_flickr30k.py`` and ``Flickr30K/run_predict.py`` parse their command line (``cli``)
into settings objects (``training_args``) and call ``finetune`` / ``predict`` here; ``python -m visualbert.evaluate flickr30k`` scores a
prediction file with the same ``metrics.grounding_recall`` that training reports.

Data: ``--annotation_dir`` (default ``<input_dir>/Flickr30kEntities``) holds the release as it
comes: ``Sentences/``, ``Annotations/`` and the image lists ``train.txt`` / ``val.txt`` /
``test.txt``; a split is one of those names or the path of another list. Regions come from
``--features``, a store that keeps each region's box.
"""
import json
import os

import numpy as np
import paddle

from . import engine, environment, pretrained
from .formats.flickr30k import read_flickr30k, read_flickr30k_image_list
from .grounding import GroundingDataset
from .metrics import grounding_recall
from .modeling import VisualBertForRegionToPhraseAlignment
from .progress import Progress
from .atomic import write_file
from .errors import user_errors
from .lifetime import interrupts_in_one_line
from .tasks import open_task_features, record_provenance, run_settings

__all__ = ["finetune", "predict", "annotation_root", "load_split", "ranked_boxes", "score_grounding",
           "write_predictions"]


def annotation_root(args):
    """Where the Flickr30K Entities release is: --annotation_dir, else <input_dir>/Flickr30kEntities."""
    if args.annotation_dir:
        return args.annotation_dir
    if not args.input_dir:
        raise ValueError("--annotation_dir (the Flickr30kEntities folder with Sentences/, Annotations/ and "
                         "train.txt / val.txt / test.txt) or --input_dir (holding it) is needed")
    return os.path.join(args.input_dir, "Flickr30kEntities")


def load_split(root, split):
    """The boxed-phrase captions of ``split`` (train / val / test, or an image-list file), with a summary line."""
    list_path = split if os.path.isfile(split) else os.path.join(root, f"{split}.txt")
    image_ids = read_flickr30k_image_list(list_path)
    progress = Progress(f"read flickr30k {split}", "image", len(image_ids), leave=False)

    def on_image(n):
        progress.update()
        progress.show(n, at_most_every=10)

    try:
        examples, summary = read_flickr30k(root, image_ids, on_image=on_image)
    finally:
        progress.close()
    left_out = summary["left_out"]
    detail = ", ".join(f"{t} {n}" for t, n in left_out.most_common())
    environment.log0(f"flickr30k {split}: {summary['phrases']} phrases with boxes in {summary['captions']} captions "
                     f"of {summary['images']} images; left out {sum(left_out.values())} phrases whose entity has no "
                     f"box" + (f" ({detail})" if detail else ""))
    if not examples:
        raise ValueError(f"{list_path}: no caption of these images has a phrase with a box")
    return examples


def _dataset(args, split, tokenizer, features, spatial):
    examples = load_split(annotation_root(args), split)
    dataset = GroundingDataset(examples, tokenizer, features, image_key=args.image_key,
                               max_seq_length=args.max_seq_length, visual_dtype=args.feature_dtype, spatial=spatial)
    for ex in examples:
        key = dataset.key(ex)
        if key not in features:
            raise FileNotFoundError(f"{features.where()}: no region features for image {key} (needed by flickr30k "
                                    f"{split} image {ex['image_id']}; --image_key is {args.image_key!r})")
    return dataset


def _open_features(args):
    if not args.features:
        raise ValueError("--features (a store with each region's box: python -m visualbert.features import, or "
                         "python -m visualbert.extract --boxes) is needed for Flickr30K")
    return open_task_features(args)


# ---------------------------------------------------------------------------- scoring


def _ranking_step(model, batch):
    """Per caption: (example index, per phrase (region order best first, scores, hit flags in that order))."""
    logits = model(**engine.model_kwargs(model, batch, {"labels": None})).logits.astype("float32").numpy()
    positions = batch["region_to_phrase_position"].numpy()
    regions = batch["visual_attention_mask"].numpy().sum(1)
    hits = batch["labels"].numpy() > 0
    out = []
    for b, index in enumerate(batch["example_index"].numpy()):
        phrases = []
        for p in np.flatnonzero(positions[b] >= 0):
            scores = logits[b, p, :regions[b]]
            order = np.argsort(-scores, kind="stable")
            phrases.append((order, scores[order], hits[b, p, order]))
        out.append((int(index), phrases))
    return out


def ranked_boxes(model, dataset, batch_size, num_workers=0):
    """``[(example index, [(order, scores, hits) per phrase])]`` for every caption of ``dataset``."""
    return engine.predict(model, dataset, dataset.collate_fn(), batch_size, _ranking_step, num_workers=num_workers,
                          desc="flickr30k predict")


def recall_of(dataset, rows):
    """metrics.grounding_recall of ``ranked_boxes`` rows."""
    phrases = [(ex_phrase["types"], hits)
               for index, ranked in rows
               for ex_phrase, (_, _, hits) in zip(dataset.examples[index]["phrases"], ranked)]
    return grounding_recall(phrases)


def score_grounding(model, dataset, batch_size, num_workers=0):
    """What training reports: overall R@1/5/10 and the upper bound, as fractions."""
    overall = recall_of(dataset, ranked_boxes(model, dataset, batch_size, num_workers))["overall"]
    return {"recall_at_1": overall["R@1"] / 100, "recall_at_5": overall["R@5"] / 100,
            "recall_at_10": overall["R@10"] / 100, "upper_bound": overall["upper_bound"] / 100}


def write_predictions(path, dataset, rows):
    """One JSON object per phrase: which caption and phrase, and every region's box (pixels) best first.

    ``{"image_id", "caption_index", "phrase_index", "entity_id", "phrase", "types", "boxes": [[x1, y1, x2,
    y2], ...], "scores": [...]}``; ``phrase_index`` counts every phrase of the caption's markup.
    """
    records = []
    for index, ranked in rows:
        ex = dataset.examples[index]
        scale = np.array([ex["width"], ex["height"], ex["width"], ex["height"]])
        boxes = dataset.features.boxes(dataset.key(ex))[:, :4] * scale
        for phrase, (order, scores, _) in zip(ex["phrases"], ranked):
            records.append({"image_id": ex["image_id"], "caption_index": ex["caption_index"],
                            "phrase_index": phrase["phrase_index"], "entity_id": phrase["entity_id"],
                            "phrase": phrase["text"], "types": phrase["types"],
                            "boxes": [[round(float(v), 2) for v in boxes[j]] for j in order],
                            "scores": [round(float(s), 4) for s in scores]})
    write_file(path, lambda f: json.dump(records, f))
    return len(records)


# ---------------------------------------------------------------------------- entry points


def finetune(args, training):
    """What Flickr30K/run_flickr30k.py does: fine-tune the region-to-phrase head with the data and model
    of ``args`` (``TaskArguments``) as ``training`` (``TrainingArguments``) says, scoring
    ``args.eval_split`` as it goes; returns the last evaluation's scores."""
    with interrupts_in_one_line():  # while loading; the training loop says where it stopped itself
        return _finetune(args, training)


def _finetune(args, training):
    environment.setup_device(training, args)
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        features = _open_features(args)
        model, spatial = pretrained.load_task_model(VisualBertForRegionToPhraseAlignment, args.model_name_or_path,
                                                 features, cpu_kernels=args.cpu_kernels)
        model = record_provenance(model, features)
        train_ds = _dataset(args, args.train_split, tokenizer, features, spatial)
        eval_ds = _dataset(args, args.eval_split, tokenizer, features, spatial) if args.eval_split else None
    scorer = None
    if eval_ds is not None:
        scorer = lambda m: score_grounding(m, eval_ds, training.eval_batch_size, training.num_workers)  # noqa: E731
    return engine.train(training, model, train_ds, train_ds.collate_fn(), {"loss": lambda b: len(b["input_ids"])},
                        scorer=scorer, best_metric="recall_at_1", settings=run_settings(args, model))


def predict(args, prediction):
    """What Flickr30K/run_predict.py does: write ``prediction.output`` for ``prediction.split`` and print its R@K."""
    written = []
    with interrupts_in_one_line(after=lambda: None if written else f"{prediction.output} was not written"):
        _predict(args, prediction, written)


def _predict(args, prediction, written):
    environment.setup_device(prediction, args)
    with user_errors():
        tokenizer = pretrained.tokenizer_from_args(args)
        features = _open_features(args)
        model, spatial = pretrained.load_task_model(VisualBertForRegionToPhraseAlignment, args.model_name_or_path,
                                                 features, new_head=False, cpu_kernels=args.cpu_kernels)
        dataset = _dataset(args, prediction.split, tokenizer, features, spatial)
    with paddle.amp.auto_cast(enable=prediction.use_amp, dtype=prediction.amp_dtype):
        rows = ranked_boxes(model, dataset, prediction.batch_size, prediction.num_workers)
    if not environment.is_main():
        return
    count = write_predictions(prediction.output, dataset, rows)
    written.append(prediction.output)
    print(f"wrote the ranked boxes of {count} phrases to {prediction.output}")
    print(json.dumps({"split": prediction.split, **recall_of(dataset, rows)["overall"]}))
