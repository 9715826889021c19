"""Numeric flags are checked when the command line is parsed: a bad value ends the run with
argparse's usage line and one error line naming the flag, never a ZeroDivisionError, a Paddle
traceback or a run that never ends. Parse-level only: each script's parse_args runs in-process."""
import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
import types

import pytest

from conftest import ROOT
from visualbert import argtypes, cli

SCRIPTS = {  # script -> the required flags
    "run_pretrain.py": ["--input_dir", "X_COCO", "--output_dir", "out", "--dataset", "coco_captions"],
    "VQA2/run_vqa2.py": ["--input_dir", "X_COCO", "--output_dir", "out"],
    "VQA2/run_predict.py": ["--input_dir", "X_COCO"],
    "NLVR2/run_nlvr2.py": ["--input_dir", "X_NLVR", "--output_dir", "out"],
    "NLVR2/run_predict.py": ["--input_dir", "X_NLVR"],
}
TRAINING = ["run_pretrain.py", "VQA2/run_vqa2.py", "NLVR2/run_nlvr2.py"]
PREDICTION = ["VQA2/run_predict.py", "NLVR2/run_predict.py"]
FINETUNING = ["VQA2/run_vqa2.py", "NLVR2/run_nlvr2.py"]

_modules = {}


def parse(script, extra):
    if script not in _modules:  # two scripts are called run_predict: load each under its own name
        spec = importlib.util.spec_from_file_location(script.replace("/", "_")[:-3], os.path.join(ROOT, script))
        _modules[script] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_modules[script])
    # one namespace of the settings objects the script hands on, to read any setting by name
    settings = _modules[script].parse_args(SCRIPTS[script] + list(extra))
    return types.SimpleNamespace(**{k: v for s in settings for k, v in dataclasses.asdict(s).items()})


def refused(script, extra, capsys):
    """The one error line argparse printed (after the usage line) for a refused command line."""
    with pytest.raises(SystemExit) as e:
        parse(script, extra)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage:") and "Traceback" not in "\n".join(err)
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


# (flag, bad value, what the message says is expected)
TRAINING_BAD = [
    ("--gradient_accumulation_steps", "0", "an integer >= 1"),
    ("--logging_steps", "0", "an integer >= 1"),
    ("--save_steps", "-5", "an integer >= 1"),
    ("--eval_steps", "-1", "an integer >= 0"),
    ("--save_total_limit", "-1", "an integer >= 0"),
    ("--warmup_steps", "-10", "an integer >= 0"),
    ("--num_workers", "-1", "an integer >= 0"),
    ("--learning_rate", "0", "a number > 0"),
    ("--learning_rate", "nan", "a number > 0"),
    ("--learning_rate", "inf", "a number > 0"),
    ("--adam_epsilon", "0", "a number > 0"),
    ("--weight_decay", "-0.1", "a number >= 0"),
    ("--max_grad_norm", "-1", "a number >= 0"),
    ("--num_train_epochs", "-2", "a number >= 0"),
    ("--warmup_proportion", "1.5", "a number in [0, 1]"),
    ("--warmup_proportion", "-0.1", "a number in [0, 1]"),
    ("--seed", "-1", "an integer in [0, 4294967295]"),
    ("--seed", "4294967296", "an integer in [0, 4294967295]"),
    ("--max_seq_length", "3", "an integer >= 4"),
    ("--max_regions", "0", "an integer >= 1"),
]


@pytest.mark.parametrize("script", TRAINING)
@pytest.mark.parametrize("flag,value,expected", TRAINING_BAD)
def test_training_flags_are_refused(script, flag, value, expected, capsys):
    line = refused(script, [flag, value], capsys)
    assert line.endswith(f"error: argument {flag}: expected {expected}, got {value}"), line


@pytest.mark.parametrize("script,flag", [("run_pretrain.py", "--train_batch_size"),
                                         ("run_pretrain.py", "--eval_batch_size"),
                                         ("run_pretrain.py", "--max_eval_samples"),
                                         *[(s, "--batch_size") for s in FINETUNING + PREDICTION]])
@pytest.mark.parametrize("value", ["-4", "0"])
def test_batch_sizes_must_be_positive(script, flag, value, capsys):
    line = refused(script, [flag, value], capsys)
    assert line.endswith(f"error: argument {flag}: expected an integer >= 1, got {value}"), line


@pytest.mark.parametrize("script", PREDICTION)
@pytest.mark.parametrize("flag,value,expected", [("--num_workers", "-2", "an integer >= 0"),
                                                 ("--max_regions", "-1", "an integer >= 1"),
                                                 ("--max_seq_length", "0", "an integer >= 4")])
def test_prediction_flags_are_refused(script, flag, value, expected, capsys):
    line = refused(script, [flag, value], capsys)
    assert line.endswith(f"error: argument {flag}: expected {expected}, got {value}"), line


def test_mask_prob_is_a_probability(capsys):
    line = refused("run_pretrain.py", ["--mask_prob", "1.2"], capsys)
    assert line.endswith("error: argument --mask_prob: expected a number in [0, 1], got 1.2"), line


@pytest.mark.parametrize("script", TRAINING)
def test_a_not_a_number_names_the_text(script, capsys):
    line = refused(script, ["--gradient_accumulation_steps", "two"], capsys)
    assert line.endswith("error: argument --gradient_accumulation_steps: expected an integer >= 1, got 'two'"), line


@pytest.mark.parametrize("script", TRAINING)
def test_zero_epochs_need_max_steps(script, capsys):
    line = refused(script, ["--num_train_epochs", "0"], capsys)
    assert line.endswith("error: --num_train_epochs must be > 0 unless --max_steps > 0 sets the length"), line
    args = parse(script, ["--num_train_epochs", "0", "--max_steps", "5"])
    assert (args.num_train_epochs, args.max_steps) == (0, 5)


@pytest.mark.parametrize("script", TRAINING)
def test_boundary_values_are_accepted(script):
    args = parse(script, ["--num_workers", "0", "--eval_steps", "0", "--save_total_limit", "0",
                          "--max_grad_norm", "0", "--weight_decay", "0", "--warmup_proportion", "1",
                          "--warmup_steps", "0", "--seed", "0", "--max_seq_length", "4", "--max_regions", "1",
                          "--gradient_accumulation_steps", "1", "--learning_rate", "5e-5", "--max_steps", "-1"])
    assert (args.num_workers, args.eval_steps, args.save_total_limit, args.max_grad_norm) == (0, 0, 0, 0.0)
    assert (args.warmup_proportion, args.max_seq_length, args.max_regions, args.learning_rate) == (1.0, 4, 1, 5e-5)
    assert args.train_batch_size >= 1


@pytest.mark.parametrize("script", PREDICTION)
def test_prediction_defaults_and_boundaries(script):
    args = parse(script, [])
    assert args.batch_size == 64 and args.num_workers == 2
    args = parse(script, ["--batch_size", "1", "--num_workers", "0"])
    assert (args.batch_size, args.num_workers) == (1, 0)


def test_validators_return_the_number():
    assert argtypes.positive_int("7") == 7 and argtypes.non_negative_int("0") == 0
    assert argtypes.positive_float("2e-5") == 2e-5 and argtypes.fraction("0.25") == 0.25
    assert argtypes.int_range(1, 3)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer in \[1, 3\], got 4"):
        argtypes.int_range(1, 3)("4")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 1, got '1.5'"):
        argtypes.positive_int("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number > 0, got -inf"):
        argtypes.positive_float("-inf")


def test_the_extract_tool_does_not_import_the_training_stack():
    code = ("import sys, visualbert.extract; "
            "print(sorted(m for m in sys.modules if m in ('visualbert.cli', 'visualbert.tasks', 'visualbert.engine')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("flag,value", [("--batch_size", "0"), ("--batch_size", "-4"), ("--num_workers", "-1"),
                                        ("--grid", "0"), ("--image_size", "-32"), ("--patch_size", "0")])
def test_extract_refuses_numbers_it_cannot_use(flag, value, capsys):
    from visualbert import extract

    with pytest.raises(SystemExit) as e:
        extract.build_parser().parse_args(["--image_dir", "imgs", "--output_dir", "feats", flag, value])
    assert e.value.code == 2
    assert f"argument {flag}: expected an integer >= " in capsys.readouterr().err
