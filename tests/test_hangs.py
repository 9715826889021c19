"""A feature file that cannot be read mid-run ends training and prediction with one line naming the
file and the example that needs it, at any worker count, and never hangs.

The scripts run as subprocesses under a timeout: a hang fails the test instead of stalling the suite.
Each corrupts the file of the first example the run reads, one that the start-up checks do not open.
"""
import os
import shutil

import numpy as np
import paddle
import pytest

from conftest import run_script
from visualbert.batches import EpochBatchSampler, make_loader
from visualbert.examples import describe_example, example_image_keys, load_dataset
from visualbert.features import open_features
from visualbert.inputs import ExampleError

TIMEOUT = 120  # seconds; each run takes a few
FAULTS = ("truncated", "wrong_dim", "zero_rows")
WORKERS = (0, 2)
FEATURE_TYPE = {"vqa2": "coco_detectron_fix_100", "nlvr2": "nlvr2_detectron_fix_144",
                "coco_captions": "coco_detectron_fix_100"}
DATA = {"vqa2": "X_COCO", "nlvr2": "X_NLVR", "coco_captions": "X_COCO"}
TRAIN_BATCH, SEED = 4, 42


def corrupt(path, fault, dim):
    if fault == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 100)
    elif fault == "wrong_dim":
        np.save(path, np.ones((3, dim // 2), dtype=np.float32))
    else:
        np.save(path, np.zeros((0, dim), dtype=np.float32))


@pytest.fixture(scope="module")
def broken(demo_dir, tmp_path_factory):
    """broken(dataset, split, fault, shuffled) -> (data dir, corrupted file, how errors name its example).

    The victim is the first example the run reads: the first of the training order (the engine's own
    sampler) when ``shuffled``, else the split's first example."""
    made = {}

    def make(dataset, split, fault, shuffled):
        key = (dataset, split, fault, shuffled)
        if key not in made:
            data = tmp_path_factory.mktemp(f"broken-{dataset}-{fault}") / DATA[dataset]
            shutil.copytree(demo_dir / DATA[dataset], data)
            examples = load_dataset(dataset, split, input_dir=str(data))
            first = next(iter(EpochBatchSampler(len(examples), TRAIN_BATCH, SEED)))[0] if shuffled else 0
            features = open_features(FEATURE_TYPE[dataset], str(data))
            path = features.path(example_image_keys(examples[first])[0])
            # the store reads its dimension from the first file; that one would fail at start-up instead
            assert path != next(features.iter_files())[1]
            corrupt(path, fault, features.dim)
            made[key] = (data, path, describe_example(examples[first]))
        return made[key]

    return make


def assert_one_error_line(proc, path, example):
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # tqdm may leave its bar on the line before the message, so look for the message inside lines
    errors = [line[line.index("error: "):] for line in output.splitlines() if "error: " in line]
    assert len(errors) == 1, output[-3000:]
    assert path in errors[0] and f"needed by {example}" in errors[0], errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("fault", FAULTS)
def test_training_ends_with_one_line(broken, tiny_config, tmp_path, fault, workers):
    data, path, example = broken("nlvr2", "train", fault, shuffled=True)
    proc = run_script(["NLVR2/run_nlvr2.py", "--input_dir", str(data), "--output_dir", str(tmp_path / "run"),
                       "--model_name_or_path", tiny_config(), "--eval_split", "none", "--batch_size", str(TRAIN_BATCH),
                       "--seed", str(SEED), "--max_steps", "2", "--device", "cpu", "--num_workers", str(workers)],
                      check=False, timeout=TIMEOUT)
    assert_one_error_line(proc, path, example)


@pytest.mark.slow
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("fault", FAULTS)
def test_prediction_ends_with_one_line_and_no_file(broken, tiny_config, tmp_path, fault, workers):
    data, path, example = broken("vqa2", "val", fault, shuffled=False)
    result = tmp_path / "result.json"
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(data), "--model_name_or_path",
                       tiny_config(num_labels=3129), "--split", "val", "--output", str(result), "--batch_size", "8", "--device", "cpu",
                       "--num_workers", str(workers)], check=False, timeout=TIMEOUT)
    assert_one_error_line(proc, path, example)
    assert not result.exists()


@pytest.mark.slow
def test_nlvr2_prediction_names_the_identifier(broken, tiny_config, tmp_path):
    data, path, example = broken("nlvr2", "dev", "zero_rows", shuffled=False)
    assert example.startswith("dev identifier ")
    result = tmp_path / "predictions.csv"
    proc = run_script(["NLVR2/run_predict.py", "--input_dir", str(data), "--model_name_or_path", tiny_config(),
                       "--split", "dev", "--output", str(result), "--device", "cpu", "--num_workers", "2"],
                      check=False, timeout=TIMEOUT)
    assert_one_error_line(proc, path, example)
    assert not result.exists()


@pytest.mark.slow
def test_pretraining_names_the_caption(broken, tmp_path):
    data, path, example = broken("coco_captions", "train", "truncated", shuffled=True)
    assert example.startswith("train caption_id ")
    proc = run_script(["run_pretrain.py", "--input_dir", str(data), "--output_dir", str(tmp_path / "run"),
                       "--dataset", "coco_captions", "--eval_split", "none",
                       "--model_name_or_path", os.path.join("configs", "visualbert-tiny-demo.json"),
                       "--train_batch_size", str(TRAIN_BATCH), "--seed", str(SEED), "--max_steps", "2",
                       "--device", "cpu", "--num_workers", "0"], check=False, timeout=TIMEOUT)
    assert_one_error_line(proc, path, example)


@pytest.mark.slow
def test_negative_batch_size_is_refused_at_once(demo_dir, tiny_config, tmp_path):
    # it used to draw no batches, so an epoch never ended, with or without workers
    proc = run_script(["NLVR2/run_nlvr2.py", "--input_dir", str(demo_dir / "X_NLVR"), "--output_dir",
                       str(tmp_path / "run"), "--model_name_or_path", tiny_config(), "--batch_size", "-4",
                       "--max_steps", "2", "--device", "cpu", "--num_workers", "2"], check=False, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "argument --batch_size: expected an integer >= 1, got -4" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_sampler_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="batch size must be >= 1, got -4"):
        EpochBatchSampler(10, -4, seed=0)


# ---------------------------------------------------------------------------- make_loader in-process


class Items(paddle.io.Dataset):
    """Ten examples; ``fail`` maps an index to the exception reading it raises."""

    def __init__(self, fail=None):
        self.fail = fail or {}

    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i in self.fail:
            raise self.fail[i]
        return {"x": np.full(3, i, dtype=np.float32), "n": np.int64(i), "name": f"item{i}"}


def collate(items):
    return {"x": np.stack([it["x"] for it in items]), "n": np.stack([it["n"] for it in items]),
            "name": [it["name"] for it in items]}


def batch_sampler():
    return paddle.io.BatchSampler(list(range(10)), batch_size=4, shuffle=False)


@pytest.mark.parametrize("workers", WORKERS)
def test_loader_batches_equal_paddles(workers):
    """The good path hands over what Paddle's own DataLoader does: same tensors, dtypes, strings."""
    ours = list(make_loader(Items(), batch_sampler(), collate, workers))
    paddles = list(paddle.io.DataLoader(Items(), batch_sampler=batch_sampler(), collate_fn=collate, num_workers=0))
    assert len(ours) == len(paddles) == 3
    for a, b in zip(ours, paddles):
        assert a.keys() == b.keys()
        for k in ("x", "n"):
            assert isinstance(a[k], paddle.Tensor) and a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
        assert a["name"] == b["name"]


@pytest.mark.parametrize("workers", WORKERS)
def test_loader_turns_an_example_error_into_one_line(workers):
    loader = make_loader(Items({6: ExampleError("f.npy: truncated (needed by train question_id 6)")}),
                                batch_sampler(), collate, workers)
    assert next(loader)["name"] == ["item0", "item1", "item2", "item3"]  # batches before it still arrive
    with pytest.raises(SystemExit) as e:
        next(loader)
    assert e.value.code == "error: f.npy: truncated (needed by train question_id 6)"


def test_loader_without_workers_raises_other_errors_as_they_are():
    # a bug is no user error: it keeps its traceback, and the run still ends instead of waiting
    loader = make_loader(Items({1: KeyError("bug")}), batch_sampler(), collate, 0)
    with pytest.raises(KeyError, match="bug"):
        next(loader)


def test_dataset_error_names_file_and_example(demo_dir, tmp_path):
    from visualbert.inputs import NLVR2Dataset, get_tokenizer

    data = tmp_path / "X_NLVR"
    shutil.copytree(demo_dir / "X_NLVR", data)
    examples = load_dataset("nlvr2", "dev", input_dir=str(data))
    features = open_features("nlvr2_detectron_fix_144", str(data))
    right = features.path(example_image_keys(examples[2])[1])
    corrupt(right, "zero_rows", features.dim)
    ds = NLVR2Dataset(examples, get_tokenizer(), features)
    with pytest.raises(ExampleError) as e:
        ds[2]
    message = str(e.value)
    assert message.startswith(f"{right}: ") and "zero rows" in message
    assert message.endswith(f"(needed by dev identifier {examples[2]['identifier']})")
