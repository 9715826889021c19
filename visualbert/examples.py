"""Annotation readers: ``coco_captions``, ``vqa2`` and ``nlvr2`` -> examples (paddlenlp ``MapDataset``).

``load_dataset(name, splits, input_dir=None, annotation_dir=None, exclude_split=None)``.

Splits and files (looked up in ``annotation_dir``, else ``<input_dir>/annotations``, else
PaddleNLP's data home ``~/.paddlenlp/datasets/{COCOCaptions,VQA2,NLVR2}/annotations`` as in the
original scripts, where a missing file is downloaded from their URL and md5-checked):

- ``coco_captions``: train, val -> ``captions_{train,val}2014.json`` (COCO format).
  Example: ``image_id, caption_id, caption, split, image_key``.
- ``vqa2``: train, val, trainval, minival, test -> ``imdb_{train2014,val2014,trainval2014,
  minival2014,test2015}.npy`` (Pythia/MMF imdb, with or without the header dict at element 0).
  Example: ``image_name, image_id, question_id, feature_path, question_str, question_tokens,
  answers`` (10 human answers; ``valid_answers`` when ``answers`` is missing or empty; None on
  test), ``split, image_key``.
- ``nlvr2``: train, dev, test1, test2 -> ``{split}.json`` (JSON lines). Example: ``identifier,
  sentence, label`` (1 = "True", 0 = "False"; None only on the unlabelled test2), ``split,
  image_keys`` (left, right).

``image_key`` / ``image_keys`` are the feature-store keys (see :mod:`visualbert.features`).
minival is held out of val/trainval: whenever minival is loaded, its questions are removed from
the other splits of the same call; ``exclude_split`` removes another split's examples the same way.
Each removal is logged with its count.
"""
import collections
import logging
import os

from .features import coco_image_key
from .formats.coco import read_coco_captions as read_coco_captions_file
from .formats.nlvr2 import nlvr2_image_names
from .formats.nlvr2 import read_nlvr2 as read_nlvr2_lines
from .formats.vqa import read_vqa_imdb, read_vqa_split

__all__ = ["DATASETS", "DEFAULT_FEATURE_TYPE", "load_dataset", "annotation_path",
           "example_image_keys", "describe_example", "read_coco_captions", "read_vqa2_imdb", "read_nlvr2",
           "read_vqa_json", "image_feature_key", "build_answer_vocab"]

logger = logging.getLogger("visualbert.examples")

_Source = collections.namedtuple("_Source", "home_name files url md5 extract_to")

# Download locations and archive md5s the original scripts' PaddleNLP dataset builders used. Archives are
# unpacked under the data home; a file already present is used as is.
DATASETS = {
    "coco_captions": _Source(
        "COCOCaptions",
        {"train": "captions_train2014.json", "val": "captions_val2014.json"},
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        "0a379cfc70b0e71301e0f377548639bd",
        "",
    ),
    "vqa2": _Source(
        "VQA2",
        {"train": "imdb_train2014.npy", "val": "imdb_val2014.npy", "trainval": "imdb_trainval2014.npy",
         "minival": "imdb_minival2014.npy", "test": "imdb_test2015.npy"},
        "https://dl.fbaipublicfiles.com/mmf/data/datasets/vqa2/defaults/annotations/annotations.tar.gz",
        "bb5cd1e9101f8fa78c55bd9c0ec8eaba",
        "annotations",
    ),
    "nlvr2": _Source(
        "NLVR2",
        {"train": "train.json", "dev": "dev.json", "test1": "test1.json", "test2": "test2.json"},
        "https://gitee.com/njcky/nlvr2/raw/master/annotations.tar.gz",
        "319870abbc37d77cf394bcc3e9a4dd92",
        "annotations",
    ),
}

# Which features each dataset was trained with in the original scripts (coco_captions serves both COCO layouts).
DEFAULT_FEATURE_TYPE = {"vqa2": "coco_detectron_fix_100", "nlvr2": "nlvr2_detectron_fix_144",
                        "coco_captions": "coco_detectron_fix_100"}

# Splits whose examples must never be trained on together with the split that holds them out.
_HELD_OUT = {"vqa2": ("minival",)}
# NLVR2 test2 was released without labels; every other split must carry one.
_UNLABELLED = {"vqa2": ("test",), "nlvr2": ("test2",)}


def _data_home():
    from paddlenlp.utils.env import DATA_HOME

    return DATA_HOME


def annotation_path(name, split, input_dir=None, annotation_dir=None, download=True):
    """The annotation file of one split, by the lookup order in the module docstring."""
    source = _source(name)
    if split not in source.files:
        raise ValueError(f"unknown split '{split}' for {name} (expected one of: {', '.join(source.files)})")
    filename = source.files[split]
    if input_dir and not os.path.isdir(input_dir):
        # a mistyped data root must not end in a download of the original scripts' annotations
        raise FileNotFoundError(f"--input_dir {input_dir}: no such directory")
    if annotation_dir:
        path = os.path.join(os.fspath(annotation_dir), filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: {name} {split} annotation file not found (--annotation_dir)")
        return path
    if input_dir:
        path = os.path.join(os.fspath(input_dir), "annotations", filename)
        if os.path.isfile(path):
            return path
    home = os.path.join(_data_home(), source.home_name)
    path = os.path.join(home, "annotations", filename)
    if os.path.isfile(path):
        return path
    if download:
        _download(name, source, home, path)
    if not os.path.isfile(path):
        looked = [os.path.join(os.fspath(input_dir), "annotations", filename)] if input_dir else []
        raise FileNotFoundError(f"{name} {split} annotations not found (looked at {', '.join(looked + [path])}); "
                                "pass --annotation_dir")
    return path


def _source(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}' (expected one of: {', '.join(DATASETS)})") from None


def _download(name, source, home, path):
    from paddle.utils.download import get_path_from_url

    try:
        get_path_from_url(source.url, os.path.join(home, source.extract_to), source.md5)
    except Exception as e:  # network errors come in many types; all mean "not here"
        raise FileNotFoundError(f"{path}: not found and downloading {source.url} failed ({type(e).__name__}: {e}); "
                                "put the file there or pass --annotation_dir") from None


def build_answer_vocab(examples, top_k=None):
    """``<unk>`` then the ``top_k`` (default: all) answers of ``examples`` by how many humans gave them.

    Answers are counted as the official metric normalises them, so the vocabulary holds exactly
    the strings training targets are matched against; ties go alphabetically, for the same
    vocabulary on every run.
    """
    from .metrics import normalize_vqa_answer

    counts = collections.Counter(normalize_vqa_answer(a) for ex in examples for a in (ex.get("answers") or ()))
    counts.pop("<unk>", None)
    counts.pop("", None)
    if not counts:
        raise ValueError("cannot build an answer vocabulary: the training questions have no answers")
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ["<unk>"] + ranked[: top_k if top_k is not None else len(ranked)]


def read_vqa_json(questions_path, annotations_path=None, image_key="{image_id}", split="custom", image_map=None):
    """Examples of a split in the official VQA JSON format (see :mod:`visualbert.formats.vqa`), any split name.

    ``annotations_path`` is None for an unlabelled split. ``image_key`` is a ``str.format`` template
    from an ``image_id`` to a feature-store key (``"COCO_val2014_{image_id:012d}"``); ``image_map``
    (from :func:`visualbert.formats.vqa.read_image_map`), when given, names each image's key instead.
    Examples carry the imdb reader's fields, plus the ``answer_type`` / ``question_type`` of the
    annotations.
    """
    examples = []
    for index, q in enumerate(read_vqa_split(questions_path, annotations_path)):
        where = f"{questions_path}: question {index} (question_id {q['question_id']})"
        key = image_feature_key(q["image_id"], image_key, image_map, where)
        examples.append({
            "image_name": key,
            "image_id": q["image_id"],
            "question_id": q["question_id"],
            "feature_path": key,
            "question_str": q["question"],
            "question_tokens": [],
            "answers": q["answers"],
            "answer_type": q["answer_type"],
            "question_type": q["question_type"],
            "split": split,
            "image_key": key,
        })
    return examples


def image_feature_key(image_id, template="{image_id}", image_map=None, where=None):
    """The feature-store key of ``image_id``: ``image_map[str(image_id)]`` when a map is given, else
    ``template.format(image_id=image_id)``; a template that cannot format this id is one line."""
    if image_map is not None:
        key = image_map.get(str(image_id))
        if key is None:
            raise ValueError(f"{where + ': ' if where else ''}--image_map {image_map.path} has no key for image_id "
                             f"{image_id!r}")
        return key
    try:
        return template.format(image_id=image_id)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"--image_key {template!r}: cannot format image_id {image_id!r} ({type(e).__name__}: {e}); "
                         "the template may use only {image_id}, with a format that suits its type "
                         "({image_id:012d} needs integer ids)") from None


def read_coco_captions(path, split):
    """One example per caption of a COCO caption file (see :func:`visualbert.formats.coco.read_coco_captions`)."""
    return [dict(caption, split=split, image_key=coco_image_key(caption["image_id"], split))
            for caption in read_coco_captions_file(path)]


def read_vqa2_imdb(path, split):
    """Examples of a Pythia/MMF imdb file (see :func:`visualbert.formats.vqa.read_vqa_imdb`); answers None on test."""
    labelled = split not in _UNLABELLED["vqa2"]
    need = ("image_name", "image_id", "question_str") + (("answers",) if labelled else ())
    examples = []
    for q in read_vqa_imdb(path, need=need):
        name = q["image_name"]
        examples.append({
            "image_name": name,
            "image_id": q["image_id"],
            "question_id": q["question_id"],
            "feature_path": q["feature_path"] or name + ".npy",
            "question_str": q["question_str"],
            "question_tokens": q["question_tokens"] or [],
            "answers": q["answers"] if labelled else None,
            "split": split,
            "image_key": name,
        })
    return examples


def read_nlvr2(path, split):
    """Examples of an NLVR2 JSON-lines file (see :func:`visualbert.formats.nlvr2.read_nlvr2`); label 1 = "True"."""
    examples = []
    for ex in read_nlvr2_lines(path, need_label=split not in _UNLABELLED["nlvr2"]):
        label = None if ex["label"] is None else int(ex["label"])
        examples.append({"identifier": ex["identifier"], "sentence": ex["sentence"], "label": label,
                         "split": split, "image_keys": nlvr2_image_names(ex["identifier"])})
    return examples


_READERS = {"coco_captions": read_coco_captions, "vqa2": read_vqa2_imdb, "nlvr2": read_nlvr2}
ID_FIELD = {"coco_captions": "caption_id", "vqa2": "question_id", "nlvr2": "identifier"}


def example_image_keys(example):
    """Feature keys one example needs."""
    if "image_keys" in example:
        return list(example["image_keys"])
    return [example["image_key"]]


def describe_example(example):
    """How error messages name an example: ``train question_id 5``, ``dev identifier dev-850-0-0``."""
    field = next((f for f in ID_FIELD.values() if f in example), None)
    name = f"{field} {example[field]}" if field else f"image {example_image_keys(example)[0]}"
    return f"{example['split']} {name}" if "split" in example else name


def load_dataset(name, splits, input_dir=None, annotation_dir=None, exclude_split=None, download=True):
    """Read ``splits`` of ``name``; a ``MapDataset`` for a str, else a list in the same order.

    ``exclude_split`` (str or list) names splits whose examples are removed from every returned
    split (and ``minival`` is always removed from the other vqa2 splits of the same call), so a
    model never trains on the questions it is evaluated on.
    """
    from paddlenlp.datasets import MapDataset

    single = isinstance(splits, str)
    split_list = [splits] if single else list(splits)
    if not split_list:
        raise ValueError(f"{name}: no splits requested")
    source = _source(name)
    for s in split_list + _as_list(exclude_split):
        if s not in source.files:
            raise ValueError(f"unknown split '{s}' for {name} (expected one of: {', '.join(source.files)})")
    loaded = {}

    def read(split):
        if split not in loaded:
            path = annotation_path(name, split, input_dir, annotation_dir, download=download)
            loaded[split] = (path, _READERS[name](path, split))
        return loaded[split]

    held_out = [s for s in split_list if s in _HELD_OUT.get(name, ())] + _as_list(exclude_split)
    id_field = ID_FIELD[name]
    out = []
    for split in split_list:
        path, examples = read(split)
        for other in dict.fromkeys(held_out):
            if other == split:
                continue
            ids = {ex[id_field] for ex in read(other)[1]}
            kept = [ex for ex in examples if ex[id_field] not in ids]
            removed = len(examples) - len(kept)
            if removed:
                logger.warning("%s %s: removed %d examples that are also in %s (held out for evaluation); %d remain",
                               name, split, removed, other, len(kept))
            examples = kept
        if not examples:
            why = f" after removing {', '.join(o for o in held_out if o != split)}" if [o for o in held_out if o != split] else ""
            raise ValueError(f"{path}: {name} {split} has no examples{why}")
        out.append(MapDataset(examples))
    return out[0] if single else out


def _as_list(x):
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)
