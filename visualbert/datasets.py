"""Annotation readers: ``coco_captions``, ``vqa2`` and ``nlvr2`` -> examples (paddlenlp ``MapDataset``).

``load_dataset(name, splits, input_dir=None, annotation_dir=None, exclude_split=None)``.

Splits and files (looked up in ``annotation_dir``, else ``<input_dir>/annotations``, else
PaddleNLP's data home ``~/.paddlenlp/datasets/{COCOCaptions,VQA2,NLVR2}/annotations`` as in the
seed, where a missing file is downloaded from the seed's URL and md5-checked):

- ``coco_captions``: train, val -> ``captions_{train,val}2014.json`` (COCO format, pycocotools).
  Example: ``image_id, caption_id, caption, split, image_key``.
- ``vqa2``: train, val, trainval, minival, test -> ``imdb_{train2014,val2014,trainval2014,
  minival2014,test2015}.npy`` (Pythia/MMF imdb: element 0 is a header dict and is skipped).
  Example: ``image_name, image_id, question_id, feature_path, question_str, question_tokens,
  answers`` (10 human answers; ``valid_answers`` when ``answers`` is absent; None on test),
  ``split, image_key``.
- ``nlvr2``: train, dev, test1, test2 -> ``{split}.json`` (JSON lines). Example: ``identifier,
  sentence, label`` (1 = "True", 0 = "False"; None only on the unlabelled test2), ``split,
  image_keys`` (left, right).

``image_key`` / ``image_keys`` are the feature-store keys (see :mod:`visualbert.features`).
minival is held out of val/trainval: whenever minival is loaded, its questions are removed from
the other splits of the same call; ``exclude_split`` removes another split's examples the same way.
Each removal is logged with its count.
"""
import collections
import contextlib
import io
import json
import logging
import os

from .features import coco_image_key, nlvr2_image_keys
from .safeload import load_npy

__all__ = ["DATASETS", "DEFAULT_FEATURE_TYPE", "load_dataset", "load_answer_vocab", "annotation_path",
           "example_image_keys", "read_coco_captions", "read_vqa2_imdb", "read_nlvr2"]

logger = logging.getLogger("visualbert.datasets")

_Source = collections.namedtuple("_Source", "home_name files url md5 extract_to")

# Download locations and archive md5s the seed's PaddleNLP dataset builders used. Archives are
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

# VQA2's answer vocabulary as the seed fetched it (MMF extras); the same file ships in the package.
VQA2_EXTRAS_URL = "https://dl.fbaipublicfiles.com/mmf/data/datasets/vqa2/defaults/extras.tar.gz"
VQA2_EXTRAS_MD5 = "9baaf3291221fdef49852046a500f731"

# Which features each dataset was trained with in the seed (coco_captions serves both COCO layouts).
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
        # a mistyped data root must not end in a download of the seed's annotations
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


def load_answer_vocab(path=None):
    """The VQA answer vocabulary as a list (index = class id); the shipped 3,129 answers by default.

    Index 0 must be ``<unk>``: the model's head and the metric both rely on it.
    """
    if path is None:
        from . import VQA_ANSWERS_FILE

        path = VQA_ANSWERS_FILE
    with open(path, encoding="utf-8") as f:
        answers = [line.rstrip("\r\n") for line in f]
    while answers and answers[-1] == "":
        answers.pop()
    if not answers:
        raise ValueError(f"{path}: empty answer vocabulary")
    if answers[0] != "<unk>":
        raise ValueError(f"{path}: line 1 must be '<unk>', found {answers[0]!r}")
    if len(set(answers)) != len(answers):
        dup = collections.Counter(answers).most_common(1)[0][0]
        raise ValueError(f"{path}: answer {dup!r} appears more than once")
    return answers


def read_coco_captions(path, split):
    """One example per caption of a COCO caption json."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a COCO caption file (missing {e})") from None
    examples = []
    for ann_id in sorted(coco.anns):
        ann = coco.anns[ann_id]
        for field in ("image_id", "caption"):
            if field not in ann:
                raise ValueError(f"{path}: annotation id {ann_id} has no '{field}'")
        examples.append({"image_id": int(ann["image_id"]), "caption_id": int(ann_id), "caption": str(ann["caption"]).strip(),
                         "split": split, "image_key": coco_image_key(ann["image_id"], split)})
    return examples


_IMDB_FIELDS = ("image_name", "image_id", "question_id", "question_str")


def read_vqa2_imdb(path, split):
    """Examples of a Pythia/MMF imdb file (header element skipped; answers None on test)."""
    arr = load_npy(path)
    if arr.dtype != object or arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{path}: expected an imdb object array (header dict then items), found {arr.dtype} {arr.shape}")
    header = arr[0]
    if not isinstance(header, dict) or "question_id" in header:
        raise ValueError(f"{path}: element 0 must be the imdb header dict (version, dataset_name, ...), found "
                         f"{'a question item' if isinstance(header, dict) else type(header).__name__}")
    labelled = split not in _UNLABELLED["vqa2"]
    examples = []
    for i, item in enumerate(arr[1:], start=1):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: item {i} is a {type(item).__name__}, expected a dict")
        for field in _IMDB_FIELDS:
            if field not in item:
                raise ValueError(f"{path}: item {i} (question_id {item.get('question_id', '?')}) has no '{field}'")
        answers = None
        if labelled:
            answers = item.get("answers", item.get("valid_answers"))
            if answers is None:
                raise ValueError(f"{path}: item {i} (question_id {item['question_id']}) has neither 'answers' nor 'valid_answers'")
            answers = [str(a) for a in answers]
            if not answers:
                raise ValueError(f"{path}: item {i} (question_id {item['question_id']}) has an empty answer list")
        name = str(item["image_name"])
        examples.append({
            "image_name": name,
            "image_id": int(item["image_id"]),
            "question_id": int(item["question_id"]),
            "feature_path": str(item.get("feature_path", name + ".npy")),
            "question_str": str(item["question_str"]),
            "question_tokens": [str(t) for t in item.get("question_tokens", [])],
            "answers": answers,
            "split": split,
            "image_key": name,
        })
    return examples


def read_nlvr2(path, split):
    """Examples of an NLVR2 JSON-lines file; label 1 = "True"."""
    labelled = split not in _UNLABELLED["nlvr2"]
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            if not isinstance(item, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, found {type(item).__name__}")
            for field in ("identifier", "sentence"):
                if field not in item:
                    raise ValueError(f"{path}:{lineno}: no '{field}' field")
            label = item.get("label")
            if label is None:
                if labelled:
                    raise ValueError(f"{path}:{lineno}: identifier {item['identifier']} has no 'label' (split {split} is labelled)")
            else:
                text = str(label).strip().lower()
                if text not in ("true", "false"):
                    raise ValueError(f"{path}:{lineno}: label {label!r} of {item['identifier']} is not True/False")
                label = int(text == "true")
            try:
                keys = nlvr2_image_keys(str(item["identifier"]))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            examples.append({"identifier": str(item["identifier"]), "sentence": str(item["sentence"]), "label": label,
                             "split": split, "image_keys": keys})
    return examples


_READERS = {"coco_captions": read_coco_captions, "vqa2": read_vqa2_imdb, "nlvr2": read_nlvr2}
_ID_FIELD = {"coco_captions": "caption_id", "vqa2": "question_id", "nlvr2": "identifier"}


def example_image_keys(example):
    """Feature keys one example needs."""
    if "image_keys" in example:
        return list(example["image_keys"])
    return [example["image_key"]]


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
    id_field = _ID_FIELD[name]
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
