"""Training from Python: the settings objects the scripts build from their flags, made directly."""
import argparse
import dataclasses
import json
import os

import pytest

from visualbert import TaskArguments, TrainingArguments, cli, engine, tasks
from visualbert.training_args import PredictionArguments


def test_nlvr2_trains_from_python_without_a_command_line(demo_dir, tiny_config, tmp_path):
    """README's "Training from Python", on the demo's NLVR2 data and a tiny model."""
    data = TaskArguments(input_dir=str(demo_dir / "X_NLVR"), model_name_or_path=tiny_config(0.0), eval_split="dev")
    training = TrainingArguments(output_dir=str(tmp_path / "run"), train_batch_size=64, learning_rate=3e-3,
                                 max_steps=20, logging_steps=1, device="cpu", num_workers=0)
    scores = tasks.finetune("nlvr2", data, training)

    assert set(scores) == {"accuracy", "consistency"}
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert len(losses) == 20 and sum(losses[-5:]) < sum(losses[:5]), losses
    assert os.path.isfile(tmp_path / "run" / "model" / "model_state.pdparams")
    with open(tmp_path / "run" / "run_config.json") as f:
        run_config = json.load(f)
    # the record of the run: every setting of both objects, and how the features were made
    assert {**data.to_dict(), **training.to_dict()}.items() <= run_config.items()
    assert run_config["total_steps"] == 20 and "feature_provenance" in run_config


@pytest.mark.parametrize("make,message", [
    (lambda: TrainingArguments(output_dir="run", train_batch_size=0),
     "train_batch_size: expected an integer >= 1, got 0"),
    (lambda: TrainingArguments(output_dir="run", warmup_proportion=1.5),
     "warmup_proportion: expected a number in [0, 1], got 1.5"),
    (lambda: TrainingArguments(output_dir="run", num_train_epochs=0),
     "--num_train_epochs must be > 0 unless --max_steps > 0 sets the length"),
    (lambda: TrainingArguments(output_dir="run", device="tpu"), "device: expected auto, gpu or cpu, got 'tpu'"),
    (lambda: TrainingArguments(output_dir=""),
     "output_dir: where checkpoints, metrics.jsonl and the final model go, is needed"),
    (lambda: TaskArguments(max_seq_length=2), "max_seq_length: expected an integer >= 4, got 2"),
    (lambda: TaskArguments(loss="mse"), "loss: expected kl or bce, got 'mse'"),
    (lambda: PredictionArguments(batch_size=-1), "batch_size: expected an integer >= 1, got -1"),
])
def test_a_wrong_value_is_refused_in_one_line(make, message):
    with pytest.raises(ValueError) as e:
        make()
    assert str(e.value) == message


def test_a_misspelt_setting_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'lr'$"):
        TrainingArguments(output_dir="run", lr=1e-4)


def test_the_training_loop_takes_only_its_settings_object(tmp_path):
    namespace = argparse.Namespace(output_dir=str(tmp_path), train_batch_size=16)
    with pytest.raises(TypeError, match="engine.train takes a TrainingArguments, not Namespace"):
        engine.train(namespace, None, [], None, {})


def test_each_flag_is_made_from_its_field():
    """A script's flags and defaults come from the dataclass fields: the same names, the same defaults
    except the per-script ones the script names, and the same checks."""
    task, training = cli.parse_finetune_args("nlvr2", "", ["--output_dir", "run"])
    assert task == dataclasses.replace(TaskArguments(), task_name="nlvr2", eval_split="dev",
                                       image_feature_type="nlvr2_detectron_fix_144",
                                       model_name_or_path="visualbert-nlvr2-pre")
    assert training == dataclasses.replace(TrainingArguments(output_dir="run"), num_train_epochs=10, save_steps=5000,
                                           eval_batch_size=16)
    parser = cli.add_training_args(argparse.ArgumentParser())
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == {f.name for f in dataclasses.fields(TrainingArguments)} - {"train_batch_size", "eval_batch_size"}
