"""visualbert.checkpoint on its own: a checkpoint holds the model, the optimizer, every random
generator and the trainer state, and gives them back exactly; it refuses one of another model."""
import os
import random

import numpy as np
import paddle
import pytest
from helpers import make, numpy_batch, tensors

from visualbert import checkpoint
from visualbert import modeling as vm

SEED = 3


def trained(seed=0):
    """A tiny model and its AdamW after one step, so the optimizer has moments to save."""
    paddle.seed(seed)
    model = make(vm.VisualBertForVisualReasoning)
    model.train()
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters())
    batch = tensors(numpy_batch(seed))
    model(**batch, labels=paddle.to_tensor(np.array([0, 1]))).loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return model, optimizer


def save(output_dir, model, optimizer, step, limit=0):
    state = {"step": step, "epoch": 0, "batches_done": step}
    return checkpoint.save_checkpoint(str(output_dir), step, model, optimizer, None, state, limit,
                                      checkpoint.gather_rng_states(SEED))


def draws():
    return paddle.rand([3]).numpy().tolist(), np.random.rand(), random.random()


def test_resume_gives_back_weights_optimizer_random_generators_and_state(tmp_path):
    model, optimizer = trained(seed=0)
    np.random.seed(1), random.seed(2)
    path = save(tmp_path, model, optimizer, step=7)
    after_save = draws()  # what the run would have drawn next

    other, other_optimizer = trained(seed=5)  # another start: other weights, moments and generators
    paddle.seed(99), np.random.seed(99), random.seed(99)
    chosen, state = checkpoint.resume_checkpoint("latest", str(tmp_path), other, other_optimizer, None, SEED)

    assert chosen == path and os.path.basename(path) == "checkpoint-7"
    assert (state["step"], state["epoch"], state["batches_done"]) == (7, 0, 7)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    # paddle names accumulators after its parameter counter, which differs between the two models
    saved = checkpoint._optimizer_state_by_structure(model, optimizer.state_dict())
    restored = checkpoint._optimizer_state_by_structure(other, other_optimizer.state_dict())
    moments = [k for k in saved if "moment1" in k]
    assert moments and all(np.array_equal(saved[k].numpy(), restored[k].numpy()) for k in moments)
    assert draws() == after_save  # paddle's, numpy's and python's generators all continue where they were


def test_only_complete_checkpoints_count_and_the_limit_keeps_the_newest(tmp_path):
    model, optimizer = trained()
    for step in (2, 4, 10):
        save(tmp_path, model, optimizer, step, limit=2)
    os.makedirs(tmp_path / ".tmp-checkpoint-12")  # a save cut short never has its final name
    os.makedirs(tmp_path / "checkpoint-11")  # nor does a directory without the trainer state count
    assert checkpoint.list_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-4"), str(tmp_path / "checkpoint-10")]
    assert checkpoint.resolve_resume("latest", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert checkpoint.resolve_resume("latest", str(tmp_path / "empty")) is None  # starts fresh
    with pytest.raises(SystemExit, match=r"error: --resume .*checkpoint-11: not a complete checkpoint"):
        checkpoint.resolve_resume(str(tmp_path / "checkpoint-11"), str(tmp_path))


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    model, optimizer = trained()
    path = save(tmp_path, model, optimizer, step=1)
    bigger = make(vm.VisualBertForVisualReasoning, intermediate_size=40)
    bigger_optimizer = paddle.optimizer.AdamW(parameters=bigger.parameters())
    before = {k: v.numpy().copy() for k, v in bigger.state_dict().items()}
    with pytest.raises(SystemExit) as e:
        checkpoint.resume_checkpoint(path, str(tmp_path), bigger, bigger_optimizer, None, SEED)
    message = str(e.value)
    assert message.startswith("error: not resumed: ") and "\n" not in message and "with other shapes" in message
    assert all(np.array_equal(before[k], v.numpy()) for k, v in bigger.state_dict().items())  # left untouched


def test_an_unreadable_newest_checkpoint_falls_back_but_a_named_one_is_refused(tmp_path, capsys):
    model, optimizer = trained()
    save(tmp_path, model, optimizer, step=1)
    newest = save(tmp_path, model, optimizer, step=2)
    with open(os.path.join(newest, "optimizer.pdopt"), "wb") as f:
        f.write(b"torn")
    chosen, _ = checkpoint.resume_checkpoint("latest", str(tmp_path), model, optimizer, None, SEED)
    assert chosen == str(tmp_path / "checkpoint-1") and "falling back" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^error: --resume .*checkpoint-2: checkpoint .* is unreadable"):
        checkpoint.resume_checkpoint(newest, str(tmp_path), model, optimizer, None, SEED)
