import json
import os
import subprocess
import sys

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
    patches``, which a new image can be run through again): {"dir", "images", "feats", "run", "model"}."""
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
