"""Annotation readers: ``coco_captions``, ``vqa2`` and ``nlvr2`` -> examples (paddlenlp ``MapDataset``).

``load_dataset(name, splits, input_dir=None, annotation_dir=None, exclude_split=None)``.

Splits and files (looked up in ``annotation_dir``, else ``<input_dir>/annotations``, else
PaddleNLP's data home ``~/.paddlenlp/datasets/{COCOCaptions,VQA2,NLVR2}/annotations`` as in the
original scripts, where a missing file is downloaded from their URL and md5-checked):

- ``coco_captions``: train, val -> ``captions_{train,val}2014.json`` (COCO format, pycocotools).
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
import contextlib
import io
import json
import logging
import os

from .atomic import write_file
from .annotations import read_nlvr2 as read_nlvr2_lines
from .annotations import read_vqa_imdb
from .features import coco_image_key, nlvr2_image_keys

__all__ = ["DATASETS", "DEFAULT_FEATURE_TYPE", "load_dataset", "load_answer_vocab", "annotation_path",
           "example_image_keys", "describe_example", "read_coco_captions", "read_vqa2_imdb", "read_nlvr2",
           "read_vqa_json", "read_image_map", "image_feature_key", "build_answer_vocab", "write_answer_vocab"]

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


def write_answer_vocab(path, answers):
    """One answer per line, as :func:`load_answer_vocab` reads it (complete or not at all)."""
    write_file(path, lambda f: f.writelines(a + "\n" for a in answers))


def read_vqa_json(questions_path, annotations_path=None, image_key="{image_id}", split="custom", image_map=None):
    """Examples of a split in the official VQA JSON format, any split name.

    ``questions_path``: ``{"questions": [{"image_id", "question", "question_id"}, ...]}``;
    ``annotations_path`` (None for an unlabelled split): ``{"annotations": [{"question_id",
    "image_id", "answers": [{"answer", ...}], "answer_type", "question_type", ...}]}``, one per
    question. ``image_key`` is a ``str.format`` template from an ``image_id`` to a feature-store
    key (``"COCO_val2014_{image_id:012d}"``); ``image_map`` (a dict from :func:`read_image_map`),
    when given, names each image's key instead. Image ids are integers as in the official format,
    or strings (``"grace_hopper"``) for one's own photos. Examples carry the imdb reader's fields,
    plus the ``answer_type`` / ``question_type`` of the annotations.
    """
    questions = _read_vqa_json_list(questions_path, "questions", ("image_id", "question", "question_id"))
    answers = {}
    if annotations_path is not None:
        for index, ann in enumerate(_read_vqa_json_list(annotations_path, "annotations", ("question_id", "answers"))):
            where = f"{annotations_path}: annotation {index} (question_id {ann['question_id']})"
            given = ann["answers"]
            if not isinstance(given, list) or not given or not all(isinstance(a, dict) and isinstance(a.get("answer"), str)
                                                                   for a in given):
                raise ValueError(f'{where}: "answers" must be a non-empty list of {{"answer": str, ...}} objects')
            if ann["question_id"] in answers:
                raise ValueError(f"{where}: question_id {ann['question_id']} is annotated twice")
            answers[ann["question_id"]] = ann
    examples, seen = [], set()
    for index, q in enumerate(questions):
        where = f"{questions_path}: question {index} (question_id {q['question_id']})"
        qid, image_id = q["question_id"], q["image_id"]
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise ValueError(f"{where}: question_id must be an integer, as in the official format")
        if not (isinstance(image_id, int) and not isinstance(image_id, bool) or isinstance(image_id, str) and image_id):
            raise ValueError(f"{where}: image_id must be an integer or a non-empty string, found {image_id!r}")
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid} appears twice")
        if not isinstance(q["question"], str) or not q["question"].strip():
            # str() would train on "None" or on digits without a word of complaint
            raise ValueError(f'{where}: "question" must be the question text, got {q["question"]!r}')
        seen.add(qid)
        key = image_feature_key(image_id, image_key, image_map, where)
        ann = None
        if annotations_path is not None:
            ann = answers.get(qid)
            if ann is None:
                raise ValueError(f"{annotations_path}: no annotation for question_id {qid} of {questions_path}")
            if ann.get("image_id", image_id) != image_id:
                raise ValueError(f"{annotations_path}: question_id {qid} has image_id {ann['image_id']}, "
                                 f"{questions_path} says {image_id}")
        examples.append({
            "image_name": key,
            "image_id": image_id,
            "question_id": qid,
            "feature_path": key,
            "question_str": q["question"],
            "question_tokens": [],
            "answers": None if ann is None else [a["answer"] for a in ann["answers"]],
            "answer_type": None if ann is None else ann.get("answer_type"),
            "question_type": None if ann is None else ann.get("question_type"),
            "split": split,
            "image_key": key,
        })
    if annotations_path is not None and len(answers) != len(examples):
        extra = next(q for q in answers if q not in seen)
        raise ValueError(f"{annotations_path}: question_id {extra} has an annotation but is not in {questions_path}")
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


class ImageMap(dict):
    """``--image_map``: image id (as a string) -> feature key, read from a JSON object; ``path`` names the file."""

    def __init__(self, path, entries):
        super().__init__(entries)
        self.path = path


def read_image_map(path):
    """``--image_map FILE.json``: a JSON object from image ids to feature-store keys, checked."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: --image_map file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f'{path}: --image_map must be a non-empty JSON object {{"image_id": "feature key", ...}}')
    bad = next((k for k, v in data.items() if not isinstance(v, str) or not v), None)
    if bad is not None:
        raise ValueError(f"{path}: the key of image_id {bad!r} must be a non-empty string, found {data[bad]!r}")
    return ImageMap(path, data)


def _read_vqa_json_list(path, field, required):
    """The ``field`` list of an official VQA JSON file, each entry checked for ``required`` keys."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: VQA {field} file not found") from None
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        raise ValueError(f'{path}: expected the official VQA {field} format, a JSON object with a "{field}" list')
    if not data[field]:
        raise ValueError(f'{path}: the "{field}" list is empty')
    for index, entry in enumerate(data[field]):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {field} entry {index} is a {type(entry).__name__}, expected an object")
        missing = [k for k in required if k not in entry]
        if missing:
            raise ValueError(f"{path}: {field} entry {index} has no {', '.join(map(repr, missing))}")
    return data[field]


def read_coco_captions(path, split):
    """One example per caption of a COCO caption json."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except KeyError as e:
        raise ValueError(f"{path}: not a COCO caption file (missing {e})") from None
    except (AssertionError, TypeError):  # pycocotools asserts a JSON object; a list of strings fails on indexing
        raise ValueError(f'{path}: not a COCO caption file (expected a JSON object with an "annotations" list of '
                         '{"id", "image_id", "caption"})') from None
    examples = []
    for ann_id in sorted(coco.anns):
        ann = coco.anns[ann_id]
        for field in ("image_id", "caption"):
            if field not in ann:
                raise ValueError(f"{path}: annotation id {ann_id} has no '{field}'")
        examples.append({"image_id": int(ann["image_id"]), "caption_id": int(ann_id), "caption": str(ann["caption"]).strip(),
                         "split": split, "image_key": coco_image_key(ann["image_id"], split)})
    return examples


def read_vqa2_imdb(path, split):
    """Examples of a Pythia/MMF imdb file (see :func:`visualbert.annotations.read_vqa_imdb`); answers None on test."""
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
    """Examples of an NLVR2 JSON-lines file (see :func:`visualbert.annotations.read_nlvr2`); label 1 = "True"."""
    examples = []
    for ex in read_nlvr2_lines(path, need_label=split not in _UNLABELLED["nlvr2"]):
        label = None if ex["label"] is None else int(ex["label"])
        examples.append({"identifier": ex["identifier"], "sentence": ex["sentence"], "label": label,
                         "split": split, "image_keys": nlvr2_image_keys(ex["identifier"])})
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
