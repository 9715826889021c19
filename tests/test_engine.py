"""The training loop on a toy model: accumulation equivalence, the LR schedule, exact resume."""
import json
import os

import numpy as np
import paddle
import pytest

from conftest import LOSS_TERMS, Killed, ToyDataset, ToyModel, collate, interrupted_run, make_args, max_diff, params, run
from visualbert import checkpoint, engine, environment, batches


def test_accumulation_equals_large_batch(tmp_path):
    big, _ = run(tmp_path, "big", train_batch_size=16, gradient_accumulation_steps=1)
    acc, _ = run(tmp_path, "acc", train_batch_size=8, gradient_accumulation_steps=2)
    assert max_diff(params(big), params(acc)) <= 1e-5
    # and the weighting matters: a naive per-micro-batch mean would differ
    naive, _ = run(tmp_path, "small", train_batch_size=8, gradient_accumulation_steps=1)
    assert max_diff(params(big), params(naive)) > 1e-3


def test_schedule_reaches_zero_at_last_step(tmp_path):
    _, args = run(tmp_path, "lr", warmup_proportion=0.25)
    lines = [json.loads(l) for l in open(os.path.join(args.output_dir, "metrics.jsonl"))]
    lrs = [l["lr"] for l in lines]
    total = 3 * 3  # 48 samples / 16 per step x 3 epochs
    assert [l["step"] for l in lines] == list(range(1, total + 1))
    assert lrs[0] == pytest.approx(0.0)  # warmup starts at zero
    assert lrs[2] == pytest.approx(0.05)  # peak after floor(0.25 * 9) = 2 warmup steps
    # the value after the last optimizer step is exactly zero, and the decay is linear before it
    state = paddle.load(os.path.join(args.output_dir, f"checkpoint-{total}", "optimizer.pdopt"))
    assert state["LR_Scheduler"]["last_epoch"] == total
    assert state["LR_Scheduler"]["last_lr"] == 0.0
    assert np.allclose(np.diff(lrs[2:]), -0.05 / 7)


def test_resume_is_exact_with_dropout(tmp_path, monkeypatch):
    straight, _ = run(tmp_path, "straight", dropout=0.3, save_steps=4)
    # the same run dies right after writing checkpoint-4 (mid-epoch 2), then a fresh model resumes it
    interrupted_run(tmp_path, monkeypatch, "interrupted", dropout=0.3)
    environment.set_seed(123)  # the resumed process starts from unrelated RNG state
    resumed, args = run(tmp_path, "interrupted", dropout=0.3, save_steps=4, resume="latest", seed=42)
    assert max_diff(params(straight), params(resumed)) <= 1e-6
    steps = [json.loads(l)["step"] for l in open(os.path.join(args.output_dir, "metrics.jsonl"))]
    assert steps == list(range(1, 10))


def test_checkpoints_are_limited_and_complete(tmp_path):
    _, args = run(tmp_path, "limit", save_steps=2, save_total_limit=2)
    names = sorted(os.listdir(args.output_dir))
    assert [n for n in names if n.startswith("checkpoint-")] == ["checkpoint-8", "checkpoint-9"]
    assert not [n for n in names if n.startswith(".tmp")]
    assert os.path.exists(os.path.join(args.output_dir, "model", "model_state.pdparams"))


def test_nonfinite_loss_stops_with_last_checkpoint(tmp_path):
    args = make_args(tmp_path, "nan", save_steps=1, learning_rate=1e30, max_grad_norm=0.0)
    environment.set_seed(0)
    with pytest.raises(SystemExit, match="non-finite loss at step"):
        engine.train(args, ToyModel(), ToyDataset(), collate, LOSS_TERMS)
    assert checkpoint.list_checkpoints(args.output_dir)


def test_batch_sampler_shards_global_batches():
    one = batches.EpochBatchSampler(10, 4, seed=3, rank=0, world_size=1)
    r0 = batches.EpochBatchSampler(10, 2, seed=3, rank=0, world_size=2)
    r1 = batches.EpochBatchSampler(10, 2, seed=3, rank=1, world_size=2)
    for s in (one, r0, r1):
        s.set_epoch(1)
    for g, a, b in zip(one, r0, r1):
        assert sorted(g) == sorted(a + b)
    one.set_epoch(1, skip=2)
    assert len(list(one)) == 1 and len(one) == 1
    epoch0 = list(batches.EpochBatchSampler(10, 4, seed=3))
    one.set_epoch(2)
    assert list(one) != epoch0  # reshuffled every epoch
    assert sorted(sum(list(one), [])) == list(range(10))


def test_kill_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """Dying in the middle of writing checkpoint-4 leaves checkpoint-2 as the one `latest` resumes."""
    real_save = paddle.save

    def die_on_step_4(obj, path, *a, **kw):
        if ".tmp-checkpoint-4" in path and path.endswith("optimizer.pdopt"):
            raise Killed
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(paddle, "save", die_on_step_4)
    with pytest.raises(Killed):
        run(tmp_path, "torn", save_steps=2)
    monkeypatch.setattr(paddle, "save", real_save)
    out = tmp_path / "torn"
    assert (out / ".tmp-checkpoint-4").is_dir() and not (out / "checkpoint-4").exists()
    assert checkpoint.list_checkpoints(str(out)) == [str(out / "checkpoint-2")]
    assert checkpoint.resolve_resume("latest", str(out)) == str(out / "checkpoint-2")
    straight, _ = run(tmp_path, "straight", save_steps=2)
    resumed, _ = run(tmp_path, "torn", save_steps=2, resume="latest")
    assert max_diff(params(straight), params(resumed)) <= 1e-6


def test_losses_are_read_from_the_device_once_per_logging_step(tmp_path, monkeypatch):
    """No host read of a loss per micro-batch (each waits for the device): one read of the whole
    window per logging step."""
    floats, reads, numpys, counted_on = [], [], [], set()
    real_float, real_int, real_numpy = paddle.Tensor.__float__, paddle.Tensor.__int__, paddle.Tensor.numpy
    real_sync = engine.LossWindow.sync
    monkeypatch.setattr(paddle.Tensor, "__float__", lambda t: floats.append(t.shape) or real_float(t))
    monkeypatch.setattr(paddle.Tensor, "__int__", lambda t: floats.append(t.shape) or real_int(t))
    monkeypatch.setattr(paddle.Tensor, "numpy", lambda t, *a: numpys.append(t.shape) or real_numpy(t, *a))

    def sync(window):
        reads.append(len(window.pending))
        return real_sync(window)

    monkeypatch.setattr(engine.LossWindow, "sync", sync)
    real_gather = engine.gather_rng_states
    monkeypatch.setattr(engine, "gather_rng_states", lambda *a: numpys.append("save") or real_gather(*a))
    # loss units are counted on the host, on the batch's numpy arrays, before tensors are made
    terms = {"loss": lambda b: counted_on.add(type(b["units"])) or b["units"].sum(), "plain_loss": lambda b: len(b["x"])}
    args = make_args(tmp_path, "reads", logging_steps=3, train_batch_size=8, gradient_accumulation_steps=2)
    engine.train(args, ToyModel(), ToyDataset(), collate, terms)
    assert floats == [] and counted_on == {np.ndarray}
    assert [n for n in reads if n] == [3, 3, 3]  # 9 steps of 2 micro-batches, a line every 3 steps
    # before the one checkpoint (step 9), the only reads are the three windows' losses: nothing per
    # step (with one process no collective either)
    assert [list(shape) for shape in numpys[:numpys.index("save")]] == [[3, 2]] * 3


def test_evaluation_runs_under_trainings_autocast_after_the_checkpoint_is_saved(tmp_path, monkeypatch):
    """Evaluating in fp32 under AMP training is slower and takes other kernels; and a failed
    evaluation must not cost the step's checkpoint."""
    inside = []

    class Recorded:
        def __init__(self, args):
            self.amp = (args.use_amp, args.amp_dtype)

        def __enter__(self):
            inside.append(self.amp)

        def __exit__(self, *exc):
            inside.pop()

    monkeypatch.setattr(engine, "autocast", Recorded)
    args = make_args(tmp_path, "eval", save_steps=3, eval_steps=3, use_amp=True, amp_dtype="bfloat16")
    seen = []

    def evaluate(model):
        step = len(seen) * 3 + 3
        seen.append((list(inside), os.path.isdir(os.path.join(args.output_dir, f"checkpoint-{step}"))))
        return {"score": [0.5, 0.9, 0.7][len(seen) - 1]}

    environment.set_seed(0)
    engine.train(args, ToyModel(), ToyDataset(), collate, LOSS_TERMS, scorer=evaluate, best_metric="score")
    assert seen == [([(True, "bfloat16")], True)] * 3
    # the best score found after saving is in that checkpoint's state, so a resume keeps it
    best = [json.load(open(os.path.join(args.output_dir, f"checkpoint-{s}", "trainer_state.json")))["best"]
            for s in (3, 6, 9)]
    assert best == [0.5, 0.9, 0.9]

    def broken(model):
        raise RuntimeError("evaluation kernel failed")

    args = make_args(tmp_path, "broken", save_steps=3, eval_steps=3)
    with pytest.raises(RuntimeError):
        engine.train(args, ToyModel(), ToyDataset(), collate, LOSS_TERMS, scorer=broken, best_metric="score")
    assert checkpoint.list_checkpoints(args.output_dir) == [os.path.join(args.output_dir, "checkpoint-3")]


def test_each_rank_keeps_its_own_random_state_and_a_mismatch_is_one_line(tmp_path, monkeypatch, capsys):
    """A checkpoint holds one file per rank with that rank's own generators (not one state per
    visible GPU); one saved on another kind of device, or by fewer ranks, resumes with one line."""
    from paddle.base.libpaddle import GeneratorState

    from visualbert.safeload import load_paddle

    _, args = run(tmp_path, "rng", dropout=0.3, save_steps=4)
    saved = os.path.join(args.output_dir, "checkpoint-4")
    rng = load_paddle(os.path.join(saved, "rng_state_rank0.pdparams"), rng_state=True)
    assert (rng["rank"], rng["dropout_seed"], rng["device"], rng["gpu"]) == (0, args.seed, "cpu", None)
    assert isinstance(rng["cpu"], GeneratorState)
    assert [n for n in os.listdir(saved) if n.startswith("rng_state")] == ["rng_state_rank0.pdparams"]

    # saved on a GPU, resumed on the CPU: one line, and the run goes on
    paddle.save(dict(rng, device="gpu"), os.path.join(saved, "rng_state_rank0.pdparams"))
    capsys.readouterr()
    resumed = make_args(tmp_path, "rng", save_steps=4, resume=saved)
    engine.train(resumed, ToyModel(dropout=0.3), ToyDataset(), collate, LOSS_TERMS)
    notes = [l for l in capsys.readouterr().out.splitlines() if l.startswith("note:")]
    assert notes == [f"note: {saved} holds random states saved on GPU, this run is on CPU; dropout starts afresh "
                     "from seed + rank, so the resumed run is not bit-exact"]

    # rank 1 of a larger run finds no file of its own: its dropout starts from seed + rank
    monkeypatch.setattr(checkpoint.dist, "get_rank", lambda: 1)
    parts = checkpoint.read_checkpoint(saved)
    assert parts["rng"] is None and parts["rng_ranks"] == 1
    checkpoint.restore_rng_state(saved, parts["rng"], dropout_seed=43)
    drawn = paddle.rand([4]).numpy()
    paddle.seed(43)
    np.testing.assert_array_equal(drawn, paddle.rand([4]).numpy())


def test_small_dev_shm_passes_worker_batches_through_a_pipe_and_says_so(monkeypatch, capsys):
    """Docker's default 64 MB /dev/shm cannot hold the workers' batches (~52 MB each for BERT-base)."""
    import collections

    Stat = collections.namedtuple("Stat", "f_blocks f_frsize")
    made = []

    class Loader:
        def __init__(self, dataset, **kw):
            made.append(kw)

        def __iter__(self):
            return iter([])

    monkeypatch.setattr(paddle.io, "DataLoader", Loader)
    monkeypatch.setattr(batches, "_shm_said", [])
    sampler = batches.EpochBatchSampler(8, 4, seed=0)
    monkeypatch.setattr(batches.os, "statvfs", lambda path: Stat(f_blocks=16384, f_frsize=4096))  # 64 MB
    for _ in range(2):
        list(batches.make_loader(ToyDataset(), sampler, collate, num_workers=2))
    assert [kw["use_shared_memory"] for kw in made] == [False, False]
    out = capsys.readouterr().out.splitlines()
    assert out == ["note: /dev/shm holds only 64 MB (Docker's default is 64 MB), too little for the loader workers' "
                   "batches; passing them through a pipe instead (slower). Give the container more "
                   "(docker run --shm-size=8g, or --ipc=host)"]  # once per process
    monkeypatch.setattr(batches.os, "statvfs", lambda path: Stat(f_blocks=2 * 262144, f_frsize=4096))  # 2 GB
    list(batches.make_loader(ToyDataset(), sampler, collate, num_workers=2))
    assert made[-1]["use_shared_memory"] is True


def test_a_gpu_rank_saves_and_restores_only_its_own_devices_generator(monkeypatch):
    """Simulated GPUs: rank 1 on device 1 of 4 visible saves one generator state, and restores it on
    a machine where its device is 0 of 2 visible (paddle.get_rng_state held all 4 and then raised)."""

    class Generator:
        def __init__(self, i):
            self.state = f"state of GPU {i}"

        def get_state(self):
            return self.state

        def set_state(self, state):
            self.state = state

    first = {i: Generator(i) for i in range(4)}
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(checkpoint, "_own_device", lambda: ("gpu", 1))
    monkeypatch.setattr(checkpoint, "_cuda_generator", lambda i: first[i])
    monkeypatch.setattr(checkpoint.dist, "get_rank", lambda: 1)
    saved = checkpoint.own_rng_state(dropout_seed=43)
    assert (saved["rank"], saved["dropout_seed"], saved["device"], saved["gpu"]) == (1, 43, "gpu", "state of GPU 1")

    second = {i: Generator(10 + i) for i in range(2)}
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(checkpoint, "_own_device", lambda: ("gpu", 0))
    monkeypatch.setattr(checkpoint, "_cuda_generator", lambda i: second[i])
    assert checkpoint.restore_rng_state("checkpoint-4", saved, dropout_seed=43) is None
    assert [g.state for g in second.values()] == ["state of GPU 1", "state of GPU 11"]
