"""easy-VQA (github.com/vzhou842/easy-VQA, on PyPI as ``easy-vqa``) as official VQA JSON files.

easy-VQA is a published shapes dataset: 64 x 64 PNGs of one shape (circle / rectangle / triangle)
in one of 8 colours, anywhere in the image and of any size, with 13 answers (the shapes, the
colours, yes / no). Train: 4,000 images, 38,575 questions; test: 1,000 images, 9,673 questions.
Its own CNN + LSTM baseline scores 87.6% on test.

The package ships ``easy_vqa/data/{train,test}/images/<id>.png`` and
``easy_vqa/data/{train,test}/questions.json`` (``[[question, answer, image_id], ...]``). This
script writes, for each split, ``<split>_questions.json`` and ``<split>_annotations.json`` in the
official format README's "Your own data" commands read, leaving the images where they are, so
``--image_dir`` is the package's ``data/`` folder and the keys are ``train/images/{image_id}`` and
``test/images/{image_id}``::

    pip download easy-vqa --no-deps -d wheels/ && python -m zipfile -e wheels/easy_vqa-1.0-py3-none-any.whl easy_vqa_pkg/
    python benchmarks/easy_vqa.py --data_dir easy_vqa_pkg/easy_vqa/data --output_dir easy_vqa_json/ [--train_limit N]

Each question gets ten identical human answers (the dataset has one), so the official metric is
exact match. ``answer_type`` is ``yes/no``, ``shape`` or ``color`` (what the answer names);
``question_type`` says what a question is about: ``what shape``, ``what color``,
``yes/no shape`` (a shape word is asked about) or ``yes/no color``, which ``python -m
visualbert.evaluate vqa`` reports one by one. ``--train_limit`` keeps the first N images' train
questions (a shorter run on a slow machine).
"""
import argparse
import json
import os
import sys

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "yellow", "gray", "teal", "black", "brown")
SPLITS = ("train", "test")
# question ids are the row's index plus this: the two files number their rows from 0, and a question id
# in both splits would be taken as the same question (training leaves out what evaluation holds)
QUESTION_ID_BASE = {"train": 0, "test": 1_000_000}


def _types(question, answer):
    """(answer_type, question_type) of one easy-VQA question."""
    if answer in SHAPES:
        return "shape", "what shape"
    if answer in COLORS:
        return "color", "what color"
    if answer not in ("yes", "no"):
        raise ValueError(f"answer {answer!r} of {question!r} is none of easy-VQA's 13 answers")
    words = set(question.rstrip("?").split())
    return "yes/no", "yes/no shape" if words & set(SHAPES) else "yes/no color"


def convert(data_dir, output_dir, train_limit=None):
    """Write ``{train,test}_{questions,annotations}.json`` under ``output_dir``; returns {split: question count}."""
    os.makedirs(output_dir, exist_ok=True)
    counts = {}
    for split in SPLITS:
        source = os.path.join(data_dir, split, "questions.json")
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{source}: not found; --data_dir is the easy_vqa package's data/ folder "
                                    "(with train/ and test/ inside)")
        with open(source) as f:
            rows = json.load(f)
        questions, annotations = [], []
        for index, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 3):
                raise ValueError(f"{source}: entry {index} is {row!r}, expected [question, answer, image_id]")
            qid = QUESTION_ID_BASE[split] + index
            text, answer, image_id = row
            if split == "train" and train_limit is not None and image_id >= train_limit:
                continue
            answer_type, question_type = _types(text, answer)
            questions.append({"image_id": image_id, "question": text, "question_id": qid})
            annotations.append({"question_id": qid, "image_id": image_id, "question_type": question_type,
                                "answer_type": answer_type, "multiple_choice_answer": answer,
                                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1}
                                            for k in range(10)]})
        common = {"info": {"description": f"easy-VQA {split}"}, "license": {}, "data_subtype": split}
        for name, payload in (("questions", {"task_type": "Open-Ended", "data_type": "easy-vqa", "questions": questions}),
                              ("annotations", {"data_type": "easy-vqa", "annotations": annotations})):
            with open(os.path.join(output_dir, f"{split}_{name}.json"), "w") as f:
                json.dump(dict(common, **payload), f)
        counts[split] = len(questions)
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True, help="the easy_vqa package's data/ folder")
    p.add_argument("--output_dir", required=True, help="where the four JSON files go")
    p.add_argument("--train_limit", type=int, default=None, help="keep train questions of image ids below this")
    args = p.parse_args(argv)
    try:
        counts = convert(args.data_dir, args.output_dir, train_limit=args.train_limit)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
