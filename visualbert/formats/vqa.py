"""VQA2: the Pythia/MMF imdb, the official questions and annotations JSON, the result file EvalAI
scores, the ``--image_map`` of one's own images and the answer vocabulary.

- imdb ``.npy``: a pickled object array with one dict per question, usually after a header dict
  (creation time, version, ...) at element 0; files without the header work too. Read through
  :mod:`visualbert.safeload`, because the file is a pickle from the internet.
- Questions JSON (``v2_OpenEnded_mscoco_*_questions.json``): ``{"questions": [{"image_id",
  "question", "question_id"}, ...]}``; annotations JSON (``v2_mscoco_*_annotations.json``):
  ``{"annotations": [{"question_id", "image_id", "answers": [{"answer", ...}], "answer_type",
  "question_type", ...}]}``, one per question. Image ids are integers as in the official files, or
  non-empty strings (``"grace_hopper"``) for one's own photos.
- Result file: a JSON list of ``{"question_id": int, "answer": str}``, one per question.
- Image map: a JSON object from image ids to feature-store keys.
- Answer vocabulary (``answers_vqa.txt``, a run's ``answer_vocab.txt``): one answer a line, the
  line number minus one being the class id; line 1 is ``<unk>``.

Training (``visualbert.examples``) and scoring (``visualbert.evaluate``) read the files here, so
a file means the same to both: the same fallback from ``answers`` to ``valid_answers``, the same
checks, the same error lines.
"""
import os

import numpy as np

from ..atomic import write_file
from ..safeload import load_npy
from .common import check_ids_match, integer_id, note_unique, read_json, require_file


# --------------------------------------------------------------------------------------------
# imdb
# --------------------------------------------------------------------------------------------

# What each optional item field must hold. Callers say which fields they need: training needs
# the image fields, scoring needs the answers.
_IMDB_FIELDS = {
    "image_name": "a string",
    "image_id": "an integer",
    "feature_path": "a string",
    "question_str": "a string",
    "question_tokens": "a list of strings",
    "answers": "a list of strings",
}
# Keys only a question has; the header dict has none of them.
_QUESTION_KEYS = frozenset(("question_id", "valid_answers", *_IMDB_FIELDS))


def _is_empty(value):
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _checked(value, field, expected, where):
    if expected == "an integer":
        return integer_id(value, where, field)
    if expected == "a string" and isinstance(value, str):
        return str(value)
    if expected == "a list of strings":
        listed = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else value
        if isinstance(listed, (list, tuple)) and all(isinstance(v, str) for v in listed):
            return [str(v) for v in listed]
    raise ValueError(f"{where}: '{field}' must be {expected}, got {type(value).__name__} {value!r:.80}")


def _imdb_value(item, field, where):
    """One checked field of an imdb item, or None when absent."""
    value, expected = item.get(field), _IMDB_FIELDS[field]
    if field == "answers" and _is_empty(value) and not _is_empty(item.get("valid_answers")):
        # MMF imdbs keep the ten human answers in 'answers'; some carry only 'valid_answers', or
        # an empty 'answers' beside them. Either way 'valid_answers' stands in.
        field, value = "valid_answers", item["valid_answers"]
    if _is_empty(value):
        return None
    return _checked(value, field, expected, where)


def read_vqa_imdb(path, need=()):
    """The questions of an imdb file as a list of dicts, in file order.

    Each dict has ``question_id`` (int) and the fields of ``_IMDB_FIELDS``, None where the item
    does not give them; ``answers`` is ``valid_answers`` when ``answers`` is missing or empty.
    Fields named in ``need`` must be present (and ``answers`` non-empty). Question ids must be
    unique.
    """
    path = require_file(path, "a VQA imdb .npy")
    array = load_npy(path)
    if array.dtype != object or array.ndim != 1:
        raise ValueError(f"{path}: expected an imdb object array (an optional header dict, then one dict "
                         f"per question), found {array.dtype} {array.shape}")
    # The header (creation time, version, ...) shares no key with a question, so a first question
    # that merely lacks its question_id is reported as such rather than skipped as a header.
    first = array[0] if len(array) else None
    start = 1 if isinstance(first, dict) and not _QUESTION_KEYS.intersection(first) else 0
    questions, first_seen = [], {}
    for index in range(start, len(array)):
        item = array[index]
        where = f"{path}: item {index}"
        if not isinstance(item, dict):
            raise ValueError(f"{where} is a {type(item).__name__}, expected a dict (one question)")
        if item.get("question_id") is None:
            raise ValueError(f"{where} has no 'question_id'")
        qid = integer_id(item["question_id"], where)
        where = f"{where} (question_id {qid})"
        record = {"question_id": qid}
        for field in _IMDB_FIELDS:
            record[field] = _imdb_value(item, field, where)
        for field in need:
            if record[field] is None:
                if field == "answers":
                    raise ValueError(f"{where} has neither 'answers' nor 'valid_answers' (expected the human "
                                     "answers; a test-split imdb has none)")
                raise ValueError(f"{where} has no '{field}'")
        note_unique(first_seen, qid, f"item {index}", where, "question_id")
        questions.append(record)
    if not questions:
        raise ValueError(f"{path}: the imdb holds no questions")
    return questions



# --------------------------------------------------------------------------------------------
# Official questions and annotations JSON
# --------------------------------------------------------------------------------------------

_QUESTIONS = "the official VQA questions format, a JSON object with a \"questions\" list"
_ANNOTATIONS = "the official VQA annotations format, a JSON object with an \"annotations\" list"


def _official_list(path, field, expected, required):
    """The ``field`` list of an official VQA JSON file, each entry an object with the ``required`` keys."""
    data = read_json(path, expected)
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        raise ValueError(f"{path}: expected {expected}")
    if not data[field]:
        raise ValueError(f'{path}: the "{field}" list is empty')
    for index, entry in enumerate(data[field]):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {field} entry {index} is a {type(entry).__name__}, expected an object")
        missing = [k for k in required if k not in entry]
        if missing:
            raise ValueError(f"{path}: {field} entry {index} has no {', '.join(map(repr, missing))}")
    return data[field]


def _image_id(value, where):
    if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, str) and value):
        raise ValueError(f"{where}: image_id must be an integer or a non-empty string, found {value!r}")
    return value


def read_vqa_questions(path):
    """The questions of a questions JSON as dicts ``question_id`` (int), ``image_id`` (int or str) and
    ``question`` (the text), in file order; question ids must be unique."""
    path = os.fspath(path)
    questions, first_seen = [], {}
    for index, q in enumerate(_official_list(path, "questions", _QUESTIONS, ("image_id", "question", "question_id"))):
        where = f"{path}: question {index} (question_id {q['question_id']})"
        qid = integer_id(q["question_id"], where)
        note_unique(first_seen, qid, f"question {index}", where, "question_id")
        if not isinstance(q["question"], str) or not q["question"].strip():
            # str() would train on "None" or on digits without a word of complaint
            raise ValueError(f'{where}: "question" must be the question text, got {q["question"]!r}')
        questions.append({"question_id": qid, "image_id": _image_id(q["image_id"], where), "question": q["question"]})
    return questions


def read_vqa_annotations(path):
    """The annotations JSON as ``{question_id: {"image_id", "answers": [str], "answer_type",
    "question_type"}}`` in file order; each question is annotated once, with at least one answer.

    ``image_id`` and the two types may be left out of one's own files (None then): the types only
    break the accuracy down, and the image is named by the questions file.
    """
    path = os.fspath(path)
    annotations = {}
    for index, ann in enumerate(_official_list(path, "annotations", _ANNOTATIONS, ("question_id", "answers"))):
        where = f"{path}: annotation {index} (question_id {ann['question_id']})"
        qid = integer_id(ann["question_id"], where)
        given = ann["answers"]
        if not isinstance(given, list) or not given or not all(isinstance(a, dict) and isinstance(a.get("answer"), str)
                                                               for a in given):
            raise ValueError(f'{where}: "answers" must be a non-empty list of {{"answer": str, ...}} objects')
        for field in ("answer_type", "question_type"):
            if ann.get(field) is not None and not isinstance(ann[field], str):
                raise ValueError(f'{where}: "{field}" must be a string, got {ann[field]!r}')
        if qid in annotations:
            raise ValueError(f"{where}: question_id {qid} is annotated twice")
        image_id = ann.get("image_id")
        annotations[qid] = {"image_id": None if image_id is None else _image_id(image_id, where),
                            "answers": [a["answer"] for a in given], "answer_type": ann.get("answer_type"),
                            "question_type": ann.get("question_type")}
    return annotations


def read_vqa_split(questions_path, annotations_path=None):
    """The questions of a split in file order, each with its annotation's ``answers``, ``answer_type``
    and ``question_type`` (None without ``annotations_path``: an unlabelled split).

    The two files must hold the same questions, each on the same image: a guard against pairing
    files of different splits.
    """
    questions = read_vqa_questions(questions_path)
    if annotations_path is None:
        return [dict(q, answers=None, answer_type=None, question_type=None) for q in questions]
    annotations = read_vqa_annotations(annotations_path)
    check_ids_match(questions_path, [q["question_id"] for q in questions], annotations_path, annotations,
                    "question ids", "questions file", "annotations")
    split = []
    for q in questions:
        ann = annotations[q["question_id"]]
        if ann["image_id"] is not None and ann["image_id"] != q["image_id"]:
            raise ValueError(f"{annotations_path}: question_id {q['question_id']} has image_id {ann['image_id']}, "
                             f"{questions_path} says {q['image_id']}")
        split.append(dict(q, answers=ann["answers"], answer_type=ann["answer_type"],
                          question_type=ann["question_type"]))
    return split


def read_vqa_ground_truth(path, questions=None):
    """What VQA accuracy is scored against, from official annotations or a Pythia/MMF imdb.

    ``path`` is a ``v2_mscoco_*_annotations.json`` or an imdb ``.npy``. ``questions``, an optional
    ``v2_OpenEnded_mscoco_*_questions.json`` beside annotations, must hold the same questions on the
    same images and adds the question text.

    Returns ``{question_id: {"answers": [str], "answer_type", "question_type", "question"}}``, in
    file order; types and question are None where the file does not give them.
    """
    path = os.fspath(path)
    if path.endswith(".npy"):
        return {q["question_id"]: {"answers": q["answers"], "answer_type": None, "question_type": None,
                                   "question": q["question_str"]}
                for q in read_vqa_imdb(path, need=("answers",))}
    annotations = read_vqa_annotations(path)
    texts = {}
    if questions is not None:
        texts = {q["question_id"]: q["question"] for q in read_vqa_split(questions, path)}
    return {qid: {"answers": ann["answers"], "answer_type": ann["answer_type"],
                  "question_type": ann["question_type"], "question": texts.get(qid)}
            for qid, ann in annotations.items()}


# --------------------------------------------------------------------------------------------
# Result file and image map
# --------------------------------------------------------------------------------------------

_RESULT = 'a JSON list of {"question_id": int, "answer": str}'


def read_vqa_result(path):
    """Predictions from a VQA result file (the EvalAI upload format) as ``{question_id: answer}``."""
    path = os.fspath(path)
    data = read_json(path, _RESULT)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected {_RESULT}, found a {type(data).__name__}")
    predictions = {}
    for index, item in enumerate(data):
        where = f"{path}: result {index}"
        if not isinstance(item, dict) or "question_id" not in item or "answer" not in item:
            raise ValueError(f'{where} is not an object with "question_id" and "answer"')
        qid = integer_id(item["question_id"], where)
        if not isinstance(item["answer"], str):
            raise ValueError(f"{where} (question {qid}): answer must be a string, got {item['answer']!r}")
        if qid in predictions:
            raise ValueError(f"{where}: question {qid} is answered twice (expected one answer per question)")
        predictions[qid] = item["answer"]
    return predictions


class ImageMap(dict):
    """``--image_map``: image id (as a string) -> feature key, read from a JSON object; ``path`` names the file."""

    def __init__(self, path, entries):
        super().__init__(entries)
        self.path = path


def read_image_map(path):
    """``--image_map FILE.json``: a JSON object from image ids to feature-store keys, checked."""
    expected = '--image_map, a non-empty JSON object {"image_id": "feature key", ...}'
    data = read_json(path, expected)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected {expected}")
    bad = next((k for k, v in data.items() if not isinstance(v, str) or not v), None)
    if bad is not None:
        raise ValueError(f"{path}: the key of image_id {bad!r} must be a non-empty string, found {data[bad]!r}")
    return ImageMap(path, data)


# --------------------------------------------------------------------------------------------
# Answer vocabulary
# --------------------------------------------------------------------------------------------

def read_answer_vocab(path=None):
    """The VQA answer vocabulary as a list (index = class id); the shipped 3,129 answers by default.

    Index 0 must be ``<unk>``: the model's head and the metric both rely on it. Blank lines at the
    end are ignored; each answer appears once.
    """
    if path is None:
        from .. import VQA_ANSWERS_FILE

        path = VQA_ANSWERS_FILE
    path = require_file(path, "an answer vocabulary, one answer a line, <unk> first")
    with open(path, encoding="utf-8-sig") as f:
        answers = [line.rstrip("\r\n") for line in f]
    while answers and answers[-1] == "":
        answers.pop()
    if not answers:
        raise ValueError(f"{path}: empty answer vocabulary")
    if answers[0] != "<unk>":
        raise ValueError(f"{path}: line 1 must be '<unk>', found {answers[0]!r}")
    first_seen = {}
    for lineno, answer in enumerate(answers, start=1):
        note_unique(first_seen, answer, f"line {lineno}", f"{path}:{lineno}", "answer", shown=repr(answer))
    return answers


def write_answer_vocab(path, answers):
    """One answer per line, as :func:`read_answer_vocab` reads it (complete or not at all)."""
    write_file(path, lambda f: f.writelines(a + "\n" for a in answers))
