"""The "your own data" path end to end: ``python -m visualbert.demo --own_images DIR``.

Draws PNG images of one coloured shape each and writes questions about them in the official VQA
JSON format, as a user with their own pictures would have them::

    DIR/images/shape_<image_id:05d>.png                         64 x 64 RGB, one shape on a light background
    DIR/{train,val}_questions.json, DIR/{train,val}_annotations.json   official VQA format, 10 human answers

then runs the four commands of README's "Your own data" section (printed as they run):
``python -m visualbert.extract --backbone patches_hog``, ``VQA2/run_vqa2.py`` on the JSON files with
``--answer_vocab build``, ``VQA2/run_predict.py`` on the val questions, and
``python -m visualbert.evaluate vqa``, whose accuracy it reports.

Questions (answer in brackets): what shape (circle / square / triangle), what colour (red /
green / blue / yellow), "is the shape <colour>?" and "is there a <shape>?" (yes / no, balanced).
Shapes vary in size and position, backgrounds in shade; 8 to 10 of the 10 human answers are right,
written with the case, article and punctuation variations the official normalisation undoes.
"""
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

__all__ = ["SHAPES", "COLORS", "write_shapes", "run_own_images"]

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
IMAGE_SIZE = 64
SPLITS = {"train": 320, "val": 80}
ID_BASE = {"train": 1, "val": 50001}
IMAGE_KEY = "shape_{image_id:05d}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _draw(rng, shape, color):
    from PIL import Image, ImageDraw

    shade = int(rng.integers(200, 256))
    im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (shade, shade, shade))
    # large and near the centre: the outline crosses several of the 4 x 4 cells the features describe
    side = int(rng.integers(IMAGE_SIZE * 6 // 10, IMAGE_SIZE * 8 // 10))
    x, y = (int(v) for v in (IMAGE_SIZE - side) // 2 + rng.integers(-IMAGE_SIZE // 16, IMAGE_SIZE // 16 + 1, size=2))
    draw = ImageDraw.Draw(im)
    fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLORS[color])
    if shape == "circle":
        draw.ellipse([x, y, x + side, y + side], fill=fill)
    elif shape == "square":
        draw.rectangle([x, y, x + side, y + side], fill=fill)
    else:
        draw.polygon([(x + side / 2, y), (x, y + side), (x + side, y + side)], fill=fill)
    return im


def _answers(rng, right, family):
    """Ten human answers: 8 to 10 right (in the spellings people type), the rest another family member."""
    n_right = int(rng.integers(8, 11))
    out = []
    for k in range(10):
        if k < n_right:
            style = rng.random()
            out.append(right if style < 0.8 else (right.capitalize() if style < 0.9 else right + "."))
        else:
            out.append(str(rng.choice([w for w in family if w != right])))
    return [out[i] for i in rng.permutation(10)]


def _questions(rng, image_id, shape, color):
    """(question, question_type, answer_type, right answer, answer family) for one image."""
    other_color = str(rng.choice([c for c in COLORS if c != color]))
    other_shape = str(rng.choice([s for s in SHAPES if s != shape]))
    asked_color = color if rng.random() < 0.5 else other_color
    asked_shape = shape if rng.random() < 0.5 else other_shape
    return [
        ("what shape is in the picture?", "what shape is", "other", shape, SHAPES),
        ("what color is the shape?", "what color is the", "other", color, tuple(COLORS)),
        (f"is the shape {asked_color}?", "is the", "yes/no", "yes" if asked_color == color else "no", ("yes", "no")),
        (f"is there a {asked_shape}?", "is there a", "yes/no", "yes" if asked_shape == shape else "no", ("yes", "no")),
    ]


def write_shapes(out_dir, seed=0):
    """Images and official-format question/annotation files under ``out_dir``; returns their paths."""
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    files = {"images": image_dir}
    for split, count in SPLITS.items():
        questions, annotations = [], []
        for i in range(count):
            image_id = ID_BASE[split] + i
            shape, color = SHAPES[int(rng.integers(len(SHAPES)))], list(COLORS)[int(rng.integers(len(COLORS)))]
            _draw(rng, shape, color).save(os.path.join(image_dir, IMAGE_KEY.format(image_id=image_id) + ".png"))
            for k, (text, qtype, atype, right, family) in enumerate(_questions(rng, image_id, shape, color)):
                qid = image_id * 10 + k
                questions.append({"image_id": image_id, "question": text, "question_id": qid})
                answers = _answers(rng, right, family)
                annotations.append({"question_id": qid, "image_id": image_id, "question_type": qtype, "answer_type": atype,
                                    "multiple_choice_answer": right,
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                                for j, a in enumerate(answers)]})
        common = {"info": {"description": "visualbert own-images demo"}, "license": {}, "data_subtype": split}
        for name, payload in (("questions", {"task_type": "Open-Ended", "data_type": "shapes", "questions": questions}),
                              ("annotations", {"data_type": "shapes", "annotations": annotations})):
            path = os.path.join(out_dir, f"{split}_{name}.json")
            with open(path, "w") as f:
                json.dump(dict(common, **payload), f)
            files[f"{split}_{name}"] = path
    return files


def commands(out_dir, config):
    """The four README commands on the demo's files in ``out_dir``, as argument lists run from the repository root."""
    feats, run = os.path.join(out_dir, "feats"), os.path.join(out_dir, "run")
    result = os.path.join(out_dir, "result.json")
    j = lambda name: os.path.join(out_dir, name)  # noqa: E731
    return [
        # each of 4 x 4 cells: its pixels at 4 x 4 and a histogram of its edge orientations, which carries
        # the shape (raw pixels alone got 0.94 in 20 epochs; these, 0.97-0.998 in 10, over three seeds)
        ["-m", "visualbert.extract", "--image_dir", j("images"), "--output_dir", feats, "--backbone", "patches_hog",
         "--image_size", "64", "--grid", "4", "--patch_size", "4", "--num_workers", "2"],
        ["VQA2/run_vqa2.py", "--train_questions", j("train_questions.json"),
         "--train_annotations", j("train_annotations.json"), "--eval_questions", j("val_questions.json"),
         "--eval_annotations", j("val_annotations.json"), "--features", feats, "--image_key", IMAGE_KEY,
         "--answer_vocab", "build", "--model_name_or_path", config, "--output_dir", run, "--batch_size", "32",
         "--learning_rate", "2e-3", "--num_train_epochs", "10", "--warmup_proportion", "0.05", "--logging_steps", "40",
         "--device", "cpu", "--num_workers", "0", "--seed", "0"],
        ["VQA2/run_predict.py", "--questions", j("val_questions.json"), "--features", feats,
         "--image_key", IMAGE_KEY, "--model_name_or_path", os.path.join(run, "best"), "--output", result,
         "--device", "cpu", "--num_workers", "0"],
        ["-m", "visualbert.evaluate", "vqa", "--result", result, "--annotations", j("val_annotations.json"),
         "--questions", j("val_questions.json")],
    ]


def run_own_images(out_dir, seed=0, config=None):
    """Write the demo data, run the four commands; returns {"accuracy", "seconds", "stages"}."""
    start = time.time()
    out_dir = os.path.abspath(out_dir)
    # the demo writes images/, questions, feats/, run/ there: a folder of the user's own photos must not receive them
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir}: {'not empty' if os.path.isdir(out_dir) else 'not a folder'}; --own_images "
                              "draws its images and writes its questions, features and run there: pass a new or empty folder")
    write_shapes(out_dir, seed)
    # the demo config (initializer_range 0.1, 8 heads): at lr 2e-3 the default tiny config stayed near 0.7 here
    config = config or os.path.join(ROOT, "configs", "visualbert-tiny-demo.json")
    stages, output = [], ""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for args in commands(out_dir, config):
        t0 = time.time()
        print("$ " + shlex.join(["python"] + args), flush=True)
        proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        output = proc.stdout
        sys.stdout.write(output)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} exited with {proc.returncode}")
        stages.append((args[1] if args[0] == "-m" else args[0], round(time.time() - t0, 1)))
    accuracy = json.loads(output)["fraction"]["overall"]
    return {"accuracy": accuracy, "seconds": round(time.time() - start, 1), "stages": stages}
