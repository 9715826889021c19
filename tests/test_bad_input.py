"""Bad input end to end: crafted pickles run nothing, wrong results are refused instead of printed,
and every failure is one line that names what is wrong, with nothing half-written left behind."""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from conftest import (KEYS, LOSS_TERMS, ROOT, Evil, ToyDataset, ToyModel, collate, make_args, max_diff, one_line, params,
                      plant_payload, run, run_script, write_npy_features)
from visualbert import engine, environment, errors, features as F, pretrained
from visualbert import examples as D
from visualbert.features.__main__ import main as features_main
from visualbert.checkpoint import read_checkpoint
from visualbert.modeling import VisualBertConfig, VisualBertForPreTraining, VisualBertForVisualReasoning
from visualbert.safeload import UnsafePickleError, load_paddle


# ---------------------------------------------------------------------------- code execution


def test_paddle_files_load_as_paddle_load_does(tmp_path):
    """The restricted reader admits exactly what paddle.save writes for the files a run keeps."""
    model = ToyModel()
    opt = paddle.optimizer.AdamW(learning_rate=0.1, parameters=model.parameters(),
                                 multi_precision=False)
    batch = collate([ToyDataset()[i] for i in range(4)])
    model(**{k: paddle.to_tensor(v) for k, v in batch.items()})["loss"].backward()
    opt.step()
    nested = {"moment": paddle.ones([2]), "master_weights": {"w": paddle.full([3], 2.0)}, "LR_Scheduler": {"last_epoch": 3}}
    for name, obj in [("m.pdparams", model.state_dict()), ("o.pdopt", opt.state_dict()), ("n.pdopt", nested)]:
        paddle.save(obj, str(tmp_path / name))
        ours, theirs = load_paddle(tmp_path / name), paddle.load(str(tmp_path / name))
        assert ours.keys() == theirs.keys()
        for k, v in theirs.items():
            if isinstance(v, paddle.Tensor):
                np.testing.assert_array_equal(ours[k], v.numpy())
        if name == "n.pdopt":
            np.testing.assert_array_equal(ours["master_weights"]["w"], [2.0, 2.0, 2.0])
            assert ours["LR_Scheduler"] == {"last_epoch": 3}
    paddle.save({"paddle": paddle.get_rng_state(), "cuda": None}, str(tmp_path / "rng.pdparams"))
    rng = load_paddle(tmp_path / "rng.pdparams", rng_state=True)
    paddle.set_rng_state(rng["paddle"])
    first = paddle.rand([3]).numpy()
    paddle.set_rng_state(rng["paddle"])
    np.testing.assert_array_equal(first, paddle.rand([3]).numpy())
    with pytest.raises(UnsafePickleError, match="GeneratorState"):  # admitted only where it belongs
        load_paddle(tmp_path / "rng.pdparams")


def test_crafted_model_weights_run_nothing(tmp_path, tiny_config):
    with open(tiny_config()) as f:
        model_dir = tmp_path / "model"
        VisualBertForVisualReasoning(VisualBertConfig(**json.load(f))).save_pretrained(str(model_dir))
    marker = tmp_path / "pwned"
    plant_payload(model_dir / "model_state.pdparams", marker)
    with pytest.raises(UnsafePickleError, match="refusing to load 'posix.system'"):
        VisualBertForVisualReasoning.from_pretrained(str(model_dir))
    # what the scripts do with --model_name_or_path (a directory, or the .pdparams file in it)
    for name in (model_dir, model_dir / "model_state.pdparams"):
        with pytest.raises(SystemExit) as e, errors.user_errors():
            pretrained.load_model(VisualBertForVisualReasoning, str(name))
        assert one_line(e).startswith("error: ") and "model_state.pdparams: refusing to load 'posix.system'" in str(e.value)
    assert not marker.exists()
    # a weights file cut short is one line too
    (model_dir / "model_state.pdparams").write_bytes(b"\x80\x04\x95")
    with pytest.raises(SystemExit) as e, errors.user_errors():
        pretrained.load_model(VisualBertForVisualReasoning, str(model_dir))
    assert "model_state.pdparams: truncated or corrupt Paddle file" in one_line(e)


@pytest.mark.parametrize("victim", ["model_state.pdparams", "optimizer.pdopt", "rng_state_rank0.pdparams", "scaler.pdparams"])
def test_crafted_checkpoint_files_run_nothing(tmp_path, victim):
    _, args = run(tmp_path, "run", save_steps=3)
    marker = tmp_path / "pwned"
    plant_payload(os.path.join(args.output_dir, "checkpoint-9", victim), marker)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "run", save_steps=3, resume="latest")
    assert one_line(e).startswith("error: ") and f"checkpoint-9/{victim}: refusing to load 'posix.system'" in str(e.value)
    assert not marker.exists()


def test_refused_pickle_met_while_training_is_one_line(tmp_path, monkeypatch):
    """A feature file with a crafted pickle met mid-epoch stops the run with one line, runs nothing.
    (Batches are built in this thread here: how the DataLoader hands a worker's error over is its own test.)"""
    monkeypatch.setattr(engine, "make_loader", lambda dataset, sampler, collate_fn, num_workers:
                        (collate_fn([dataset[i] for i in batch]) for batch in sampler))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([Evil(marker)], dtype=object), allow_pickle=True)

    class ReadsFeatures(ToyDataset):
        def __getitem__(self, i):
            if i == 7:
                F.read_feature_file(str(evil), "img7")
            return super().__getitem__(i)

    args = make_args(tmp_path, "run")
    with pytest.raises(SystemExit) as e:
        engine.train(args, ToyModel(), ReadsFeatures(), collate, LOSS_TERMS)
    assert one_line(e).startswith("error: ") and "evil.npy: refusing to load 'posix.system'" in str(e.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------- silent wrong results




def test_non_finite_features_are_refused_naming_image_and_file(tmp_path):
    layout = write_npy_features(tmp_path, KEYS)
    bad = layout.path(str(tmp_path), KEYS[1])
    arr = np.load(bad)
    arr[2, 5] = np.nan
    np.save(bad, arr)
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    store.get(KEYS[0])
    with pytest.raises(ValueError, match=rf"{bad}: the region features of image '{KEYS[1]}' contain NaN or Inf"):
        store.get(KEYS[1])
    with pytest.raises(ValueError, match=KEYS[1]):  # nor can it be packed
        F.pack_features("coco_detectron_fix_100", str(tmp_path), progress=False)
    # a finite value that float16 cannot hold would become Inf in the packed store
    arr[2, 5] = 1e6
    np.save(bad, arr)
    with pytest.raises(ValueError, match=rf"{bad} as float16: the region features of image '{KEYS[1]}' contain NaN or Inf"):
        F.pack_features("coco_detectron_fix_100", str(tmp_path), progress=False)
    # rows that went bad inside a packed file are refused as well, in either on-disk dtype
    arr[2, 5] = 0.5
    np.save(bad, arr)
    for dtype, bad_value in (("float32", np.inf), ("float16", -np.inf), ("float16", np.nan)):
        out = F.pack_features("coco_detectron_fix_100", str(tmp_path), out=str(tmp_path / "store"), dtype=dtype,
                              progress=False)
        packed = np.memmap(os.path.join(out, "features.bin"), dtype=dtype, mode="r+")
        packed.reshape(-1, 8)[4] = bad_value  # a row of the second image (3 rows of dim 8 each)
        packed.flush()
        del packed
        store = F.open_features("coco_detectron_fix_100", str(tmp_path), packed_dirs=[out])
        store.get(KEYS[0], dtype=None)
        with pytest.raises(ValueError, match=rf"features.bin: the region features of image '{KEYS[1]}' contain NaN or Inf"):
            store.get(KEYS[1], dtype=None)
        shutil.rmtree(out)


@pytest.mark.slow
def test_nan_features_at_prediction_fail_in_one_line(demo_dir, tiny_config, tmp_path):
    data = tmp_path / "X_COCO"
    shutil.copytree(demo_dir / "X_COCO", data, ignore=shutil.ignore_patterns("packed"))
    test_dir = data / "data" / "detectron_fix_100" / "fc6" / "vqa" / "test2015"
    victim = sorted(os.listdir(test_dir))[2]
    arr = np.load(test_dir / victim)
    arr[:] = np.nan
    np.save(test_dir / victim, arr)
    result = tmp_path / "result.json"
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(data), "--model_name_or_path",
                       tiny_config(num_labels=3129), "--split", "test", "--output", str(result), "--device", "cpu",
                       "--batch_size", "8"], check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(test_dir / victim) in last and "contain NaN or Inf" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not result.exists()


def test_packed_store_refuses_a_source_changed_since_packing(tmp_path, capsys):
    layout = write_npy_features(tmp_path, KEYS)
    F.pack_features("coco_detectron_fix_100", str(tmp_path), progress=False)
    assert F.inspect_features("coco_detectron_fix_100", str(tmp_path), progress=False)["changed_since_packing"] == []
    changed = layout.path(str(tmp_path), KEYS[2])
    np.save(changed, np.ones((3, 8), dtype="float32"))  # same size, new values
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # whatever the clock's granularity
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    store.get(KEYS[0])
    with pytest.raises(ValueError, match=rf"{changed}: changed since it was packed"):
        store.get(KEYS[2])
    assert F.inspect_features("coco_detectron_fix_100", str(tmp_path), progress=False)["changed_since_packing"] == [changed]
    assert features_main(["inspect", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", str(tmp_path)]) == 1
    assert f"changed since packing (pack again): {changed}" in capsys.readouterr().out
    # removing the per-image files after packing is fine: the rows are all that is needed
    os.remove(changed)
    np.testing.assert_array_equal(store.get(KEYS[1]).shape, (3, 8))
    assert store.get(KEYS[2]).shape == (3, 8)


def test_store_packed_without_source_records_is_read_with_a_notice(tmp_path, capsys):
    write_npy_features(tmp_path, KEYS)
    out = F.pack_features("coco_detectron_fix_100", str(tmp_path), progress=False)
    index_path = os.path.join(out, "index.json")
    with open(index_path) as f:
        index = json.load(f)
    del index["sources"]  # as the first version of pack wrote it
    with open(index_path, "w") as f:
        json.dump(index, f)
    capsys.readouterr()
    store = F.open_features("coco_detectron_fix_100", str(tmp_path))
    assert store.get(KEYS[0]).shape == (3, 8)
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and notice[0].startswith(f"note: {out} was packed without source-file records")


class WiderToy(ToyModel):
    def __init__(self):
        super().__init__()
        self.extra = paddle.nn.Linear(2, 2)


def test_resume_refuses_weights_that_do_not_fit(tmp_path):
    _, args = run(tmp_path, "run", save_steps=3, max_steps=3)
    with pytest.raises(SystemExit) as e:  # the model has weights the checkpoint lacks
        run(tmp_path, "run", save_steps=3, max_steps=3, resume="latest", model=WiderToy())
    assert one_line(e).startswith("error: not resumed: ") and "2 missing (extra.weight, extra.bias)" in str(e.value)
    weights = os.path.join(args.output_dir, "checkpoint-3", "model_state.pdparams")
    saved = paddle.load(weights)
    paddle.save(dict(saved, stray=paddle.ones([2])), weights)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "run", save_steps=3, max_steps=3, resume="latest")
    assert "1 unexpected (stray)" in one_line(e)
    saved["out.weight"] = paddle.ones([4, 1])
    paddle.save(saved, weights)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "run", save_steps=3, max_steps=3, resume="latest")
    assert "1 with other shapes (out.weight (4, 1) vs (16, 1))" in one_line(e)


# ---------------------------------------------------------------------------- one line, nothing lost


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    straight, _ = run(tmp_path, "straight", dropout=0.3, save_steps=3)
    _, args = run(tmp_path, "run", dropout=0.3, save_steps=3, max_steps=9, save_total_limit=0)
    latest = os.path.join(args.output_dir, "checkpoint-9")
    with open(os.path.join(latest, "optimizer.pdopt"), "r+b") as f:
        f.truncate(100)  # a torn copy
    capsys.readouterr()
    resumed, _ = run(tmp_path, "run", dropout=0.3, save_steps=3, max_steps=9, save_total_limit=0, resume="latest")
    out = capsys.readouterr().out
    assert f"warning: checkpoint {latest} is unreadable: {latest}/optimizer.pdopt: truncated or corrupt" in out
    assert "falling back to the previous checkpoint" in out and "resumed from" in out and "checkpoint-6" in out
    assert max_diff(params(straight), params(resumed)) <= 1e-6  # steps 7-9 redone exactly
    # a checkpoint named explicitly is not swapped for another one
    with open(os.path.join(latest, "rng_state_rank0.pdparams"), "wb") as f:
        f.write(b"\x80\x04garbage")
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "run", save_steps=3, max_steps=9, save_total_limit=0, resume=latest)
    assert one_line(e).startswith(f"error: --resume {latest}: checkpoint {latest} is unreadable")


def test_disk_full_while_saving_removes_the_partial_checkpoint(tmp_path, monkeypatch):
    real_save = paddle.save

    def full_at_step_4(obj, path, *a, **kw):
        if ".tmp-checkpoint-4" in path and path.endswith("optimizer.pdopt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(paddle, "save", full_at_step_4)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "full", save_steps=2)
    monkeypatch.setattr(paddle, "save", real_save)
    out = tmp_path / "full"
    msg = one_line(e)
    assert msg.startswith("error: ") and "No space left on device" in msg and "checkpoint-4 failed" in msg
    assert not (out / ".tmp-checkpoint-4").exists()
    assert [n for n in sorted(os.listdir(out)) if "checkpoint" in n] == ["checkpoint-2"]
    parts = read_checkpoint(str(out / "checkpoint-2"))  # the previous checkpoint is whole
    assert parts["state"]["step"] == 2


def test_disk_full_while_writing_predictions_leaves_nothing(tmp_path, monkeypatch):
    from visualbert import tasks

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tasks.json, "dump", full)
    with pytest.raises(SystemExit) as e:
        tasks.write_vqa_result(str(tmp_path / "result.json"), {1: "yes"})
    assert one_line(e) == f"error: writing {tmp_path / 'result.json'} failed (No space left on device); nothing was written"
    assert os.listdir(tmp_path) == []


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, monkeypatch):
    import argparse
    import tempfile

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [(dict(output_dir=str(a_file)), f"--output_dir {a_file} is a file; expected a directory"),
             (dict(output_dir=str(a_file / "run")), f"--output_dir {a_file / 'run'}: {a_file} is a file, not a directory"),
             (dict(output=str(tmp_path)), f"--output {tmp_path} is a directory; expected a file path"),
             (dict(output=str(a_file / "result.json")), f"--output {a_file / 'result.json'}: {a_file} is a file, not a directory")]
    for kwargs, expected in cases:
        with pytest.raises(SystemExit) as e:
            environment.check_output_paths(argparse.Namespace(**kwargs))
        assert one_line(e).startswith(f"error: {expected}")

    def read_only(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(SystemExit) as e:
        environment.check_output_paths(argparse.Namespace(output_dir=str(tmp_path / "ro" / "run")))
    assert one_line(e) == f"error: --output_dir {tmp_path / 'ro' / 'run'}: cannot write to {tmp_path} (Permission denied)"
    assert not (tmp_path / "ro").exists()  # checking creates nothing


@pytest.mark.slow
def test_scripts_check_outputs_and_input_dir_first(tmp_path, tiny_config):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    # the output is checked before the (here missing) data is even looked at
    proc = run_script(["VQA2/run_predict.py", "--input_dir", str(tmp_path / "nowhere"), "--model_name_or_path",
                       tiny_config(), "--output", str(tmp_path), "--device", "cpu"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: --output {tmp_path} is a directory; expected a file path"
    proc = run_script(["NLVR2/run_nlvr2.py", "--input_dir", str(tmp_path / "nowhere"), "--model_name_or_path",
                       tiny_config(), "--output_dir", str(tmp_path / "run"), "--device", "cpu"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: --input_dir {tmp_path / 'nowhere'}: no such directory"


def test_missing_input_dir_is_said_and_never_downloaded_for(tmp_path, monkeypatch):
    def no_download(*a, **kw):
        raise AssertionError("tried to download annotations for a missing --input_dir")

    monkeypatch.setattr(D, "_data_home", lambda: str(tmp_path / "home"))
    monkeypatch.setattr(D, "_download", no_download)
    for name, split in (("vqa2", "minival"), ("nlvr2", "dev"), ("coco_captions", "val")):
        with pytest.raises(FileNotFoundError, match=f"--input_dir {tmp_path / 'nowhere'}: no such directory"):
            D.load_dataset(name, split, input_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        F.open_features("nlvr2_detectron_fix_144", str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_sigint_stops_training_cleanly_with_checkpoints_intact(demo_dir, tiny_config, tmp_path):
    out = tmp_path / "run"
    args = ["run_pretrain.py", "--input_dir", str(demo_dir / "X_COCO"), "--output_dir", str(out),
            "--dataset", "coco_captions", "--model_name_or_path", tiny_config(), "--device", "cpu",
            "--eval_split", "none", "--max_regions", "4", "--train_batch_size", "4", "--num_workers", "1",
            "--save_steps", "2", "--max_steps", "100000"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # its own process group, so the signal reaches the loader worker too, as Ctrl-C in a terminal does
    proc = subprocess.Popen([sys.executable] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: interrupted (SIGINT); last checkpoint ") and "--resume latest" in last
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]
    step = int(re.search(r"checkpoint-(\d+) \(continue with", last).group(1))
    assert step >= 2
    checkpoint = str(out / f"checkpoint-{step}")
    assert read_checkpoint(checkpoint)["state"]["step"] == step  # every file of it reads back
    assert VisualBertForPreTraining.from_pretrained(checkpoint).config.hidden_size == 64
