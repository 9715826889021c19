import json
import os
import pickle
import subprocess
import sys

import numpy as np
import paddle
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def all_cpu_routes(monkeypatch):
    """visualbert.cpu's kernels at every tensor size (by default small tensors take Paddle's
    kernels), so that tests on tiny models check them too."""
    from visualbert.cpu import kernels

    monkeypatch.setattr(kernels, "ROUTE_MIN_ELEMENTS", {route: 1 for route in kernels.ROUTE_MIN_ELEMENTS})


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo dataset (X_COCO/ and X_NLVR/), written once per test session."""
    from visualbert.demo import write_demo

    out = tmp_path_factory.mktemp("demo")
    write_demo(str(out), seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """Factory for tiny model configs on disk: tiny_config(dropout=0.0) -> path; num_labels sizes a
    fresh head (3129: the shipped VQA answers, which prediction checks the head against)."""
    made = {}

    def make(dropout=0.1, num_labels=None):
        if (dropout, num_labels) not in made:
            with open(os.path.join(ROOT, "configs", "visualbert-tiny.json")) as f:
                config = json.load(f)
            config["hidden_dropout_prob"] = config["attention_probs_dropout_prob"] = dropout
            if num_labels is not None:
                config["num_labels"] = num_labels
            path = tmp_path_factory.mktemp("config") / f"tiny-dropout{dropout}-labels{num_labels}.json"
            path.write_text(json.dumps(config))
            made[dropout, num_labels] = str(path)
        return made[dropout, num_labels]

    return make


def run_script(args, env=None, check=True, timeout=900):
    """Run a repo script (or `-m module`) with the test interpreter; returns CompletedProcess."""
    full_env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    # VQA2/*.py and NLVR2/*.py import this checkout's package even where the venv's editable install points elsewhere
    full_env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    full_env.update(env or {})
    proc = subprocess.run([sys.executable] + list(args), cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def shapes_vqa(tmp_path_factory):
    """A small VQA model trained on the own-images demo's shapes (features by ``extract --backbone
    patches_hog``, which a new image can be run through again): {"dir", "images", "feats", "run", "model"}."""
    from visualbert.own_demo import commands, write_shapes

    out = tmp_path_factory.mktemp("shapes")
    write_shapes(str(out), seed=0)
    extract, train = commands(str(out), os.path.join(ROOT, "configs", "visualbert-tiny-demo.json"))[:2]
    run_script(extract)
    train = list(train)
    train[train.index("--num_train_epochs") + 1] = "4"
    run_script(train)
    return {"dir": out, "images": out / "images", "feats": out / "feats", "run": out / "run",
            "model": out / "run" / "best"}


# ---------------------------------------------------------------------------- a toy training run
# The engine's behaviour (accumulation, resume, checkpoints, stops) on a model that trains in a blink.


class ToyDataset(paddle.io.Dataset):
    """Regression targets from a fixed linear map; `weights` lets one sample count more than one unit."""

    def __init__(self, n=48, dim=6):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(n, dim)).astype("float32")
        self.y = (self.x @ rng.normal(size=(dim, 1))).astype("float32")[:, 0]
        self.units = rng.integers(1, 4, size=n).astype("float32")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "units": self.units[i]}


def collate(items):
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


class ToyModel(paddle.nn.Layer):
    def __init__(self, dim=6, dropout=0.0):
        super().__init__()
        self.hidden = paddle.nn.Linear(dim, 16)
        self.norm = paddle.nn.LayerNorm(16)
        self.dropout = paddle.nn.Dropout(dropout)
        self.out = paddle.nn.Linear(16, 1)

    def forward(self, x, y=None, units=None):
        pred = self.out(self.dropout(paddle.tanh(self.norm(self.hidden(x)))))[:, 0]
        # a unit-weighted mean, like the MLM loss is a mean over masked tokens
        loss = ((pred - y) ** 2 * units).sum() / units.sum()
        return {"loss": loss, "plain_loss": ((pred - y) ** 2).mean()}

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        paddle.save(self.state_dict(), os.path.join(path, "model_state.pdparams"))


LOSS_TERMS = {"loss": lambda b: float(b["units"].sum()), "plain_loss": lambda b: len(b["x"])}


def make_args(tmp_path, name, **kw):
    """The toy run's TrainingArguments (``kw`` overrides), made in Python as a user without a command line does."""
    from visualbert import TrainingArguments

    toy = dict(output_dir=str(tmp_path / name), device="cpu", num_workers=0, train_batch_size=16, learning_rate=0.05,
               num_train_epochs=3, logging_steps=1)
    return TrainingArguments(**{**toy, **kw})


def run(tmp_path, name, dropout=0.0, model=None, **kw):
    """The toy regression run (48 samples, 3 epochs of 3 steps); returns (model, args)."""
    from visualbert import engine, environment

    args = make_args(tmp_path, name, **kw)
    environment.set_seed(args.seed)
    model = model or ToyModel(dropout=dropout)
    engine.train(args, model, ToyDataset(), collate, LOSS_TERMS)
    return model, args


def params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


class Killed(Exception):
    pass


def interrupted_run(tmp_path, monkeypatch, name, **settings):
    """A run (save_steps=4) that dies right after writing checkpoint-4; returns its output dir."""
    from visualbert import engine

    real_save = engine.save_checkpoint

    def save_then_die(output_dir, step, *a, **kw):
        path = real_save(output_dir, step, *a, **kw)
        if step == 4:
            raise Killed
        return path

    monkeypatch.setattr(engine, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(tmp_path, name, save_steps=4, **settings)
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    return tmp_path / name


# ---------------------------------------------------------------------------- bad inputs


class Evil:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant_payload(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"weight": Evil(marker)}, f, protocol=4)


def one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


def write_npy_features(root, keys, dim=8, rows=3):
    """Per-image float32 .npy features of ``keys`` in the coco_detectron_fix_100 layout under ``root``."""
    from visualbert.features import FEATURE_TYPES

    layout = FEATURE_TYPES["coco_detectron_fix_100"]
    rng = np.random.default_rng(0)
    for key in keys:
        path = layout.path(str(root), key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, rng.normal(size=(rows, dim)).astype("float32"))
    return layout


KEYS = [f"COCO_val2014_{i:012d}" for i in range(1, 4)]
