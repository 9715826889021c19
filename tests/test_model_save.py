"""Saving the final model over an earlier one: killed at any moment, the run still has a loadable model/."""
import json
import os
import shutil

import numpy as np
import paddle
import pytest

from conftest import ROOT
from visualbert import checkpoint, modeling


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def tiny_model(seed):
    with open(os.path.join(ROOT, "configs", "visualbert-tiny.json")) as f:
        config = modeling.VisualBertConfig(**json.load(f))
    paddle.seed(seed)
    return modeling.VisualBertModel(config)


def first_weight(path):
    return modeling.VisualBertModel.from_pretrained(path).embeddings.word_embeddings.weight.numpy()


@pytest.mark.parametrize("killed_after", [1, 2, 3, 4])
def test_a_save_killed_after_any_step_leaves_a_complete_model(tmp_path, monkeypatch, killed_after):
    final = str(tmp_path / "model")
    old, new = tiny_model(1), tiny_model(2)
    checkpoint.save_model(old, final)
    steps = []

    def step(real):
        def run(*args, **kwargs):
            result = real(*args, **kwargs)
            steps.append(args[0])
            if len(steps) == killed_after:
                raise Killed()
            return result
        return run

    def counted_save(path):  # file-system steps are counted once the new model is written
        new.save_pretrained(path)
        monkeypatch.setattr(checkpoint.shutil, "rmtree", step(shutil.rmtree))
        monkeypatch.setattr(checkpoint.os, "replace", step(os.replace))
        monkeypatch.setattr(checkpoint, "_exchange", step(checkpoint._exchange))

    try:
        checkpoint._write_dir_atomically(final, final + ".tmp", counted_save)
    except Killed:
        pass
    monkeypatch.undo()
    saved = first_weight(final)  # whichever model it is, it loads
    assert any(np.array_equal(saved, m.embeddings.word_embeddings.weight.numpy()) for m in (old, new))
    if len(steps) < killed_after:  # the save ran to its end
        np.testing.assert_array_equal(saved, new.embeddings.word_embeddings.weight.numpy())
        assert not os.path.exists(final + ".tmp")
