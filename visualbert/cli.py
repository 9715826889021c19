"""What the command-line scripts share beyond the training loop: model loading and common flags."""
import argparse
import contextlib
import json
import math
import os

import paddle

from . import cpu, modeling


# ---------------------------------------------------------------------------- numeric flags
# argparse ``type=`` functions: a bad value ends the run at parse time with argparse's usage line and
# one error line naming the flag, instead of a ZeroDivisionError, a Paddle traceback or a loop that
# never ends (a negative batch size yields no batches, so an epoch never finishes).


def int_range(low, high=None):
    """A ``type=`` for integers in [low, high] (no upper bound when ``high`` is None)."""
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def float_range(low, high=None, low_open=False):
    """A ``type=`` for finite numbers in [low, high] ((low, high] with ``low_open``)."""
    lower = f"> {low}" if low_open else f">= {low}"
    expected = f"a number {lower}" if high is None else f"a number in {'(' if low_open else '['}{low}, {high}]"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = float_range(0, low_open=True)
non_negative_float = float_range(0)
fraction = float_range(0, 1)
seed_int = int_range(0, 2**32 - 1)  # numpy's global seed takes no more


def add_training_args(parser, **defaults):
    """The flags every training script shares. ``defaults`` overrides per script."""
    g = parser.add_argument_group("training")
    g.add_argument("--output_dir", required=True, help="where checkpoints, metrics.jsonl and the final model go")
    g.add_argument("--num_train_epochs", type=non_negative_float, default=defaults.get("num_train_epochs", 3),
                   help="epochs to train (ignored when --max_steps > 0)")
    g.add_argument("--max_steps", type=int, default=-1,
                   help="optimizer steps to train; overrides --num_train_epochs when > 0")
    g.add_argument("--learning_rate", type=positive_float, default=defaults.get("learning_rate", 2e-5),
                   help="peak learning rate")
    g.add_argument("--weight_decay", type=non_negative_float, default=0.01,
                   help="AdamW weight decay (not on bias and LayerNorm)")
    g.add_argument("--adam_epsilon", type=positive_float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--warmup_proportion", type=fraction, default=defaults.get("warmup_proportion", 0.1),
                   help="share of optimizer steps spent warming up linearly, in [0, 1]")
    g.add_argument("--warmup_steps", type=non_negative_int, default=0,
                   help="warmup length in optimizer steps; overrides --warmup_proportion")
    g.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="global-norm gradient clipping (0 = off)")
    g.add_argument("--gradient_accumulation_steps", type=positive_int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--logging_steps", type=positive_int, default=defaults.get("logging_steps", 20),
                   help="write a metrics.jsonl line every N optimizer steps (and a progress line when the "
                        "output is not a terminal)")
    g.add_argument("--save_steps", type=positive_int, default=defaults.get("save_steps", 1000),
                   help="write a checkpoint every N optimizer steps (and always at the end)")
    g.add_argument("--save_total_limit", type=non_negative_int, default=3,
                   help="keep only the newest K checkpoints (default 3; 0 = keep all)")
    g.add_argument("--eval_steps", type=non_negative_int, default=0,
                   help="evaluate every N optimizer steps (0 = once per epoch)")
    g.add_argument("--seed", type=seed_int, default=42, help="seed for initialisation, shuffling, masking and dropout")
    g.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    g.add_argument("--use_amp", action="store_true", help="mixed precision (GPU only; ignored with a note on CPU)")
    g.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"],
                   help="AMP compute dtype; float16 uses dynamic loss scaling")
    g.add_argument("--num_workers", type=non_negative_int, default=2,
                   help="DataLoader worker processes (0 = load in the training process)")
    g.add_argument("--resume", default=None, metavar="DIR|latest",
                   help="continue from a checkpoint dir, or the newest complete one in --output_dir "
                        "(the training settings must match the saved run_config.json)")
    g.add_argument("--overwrite_output_dir", action="store_true",
                   help="delete the training run already in --output_dir (checkpoints, metrics, models) and "
                        "start over; without it (or --resume) such a directory is refused")
    g.add_argument("--allow_changed_settings", action="store_true",
                   help="with --resume: continue although training settings (batch size, learning rate, "
                        "steps, data, world size, ...) differ from the saved ones; run_config.json records "
                        "the changes, and the run no longer matches an uninterrupted one")
    g.add_argument("--visualdl", action="store_true", help="also log scalars to VisualDL in <output_dir>/visualdl")
    return parser


def check_training_args(parser, args):
    """What no single flag's type can say; call after parsing (ends with argparse's usage line)."""
    if args.max_steps <= 0 and args.num_train_epochs == 0:
        parser.error("--num_train_epochs must be > 0 unless --max_steps > 0 sets the length")
    return args



def add_model_args(parser, default_model):
    g = parser.add_argument_group("model")
    g.add_argument("--model_type", default="visualbert", choices=["visualbert"],
                   help="model family (kept for the seed's scripts; only visualbert)")
    g.add_argument("--model_name_or_path", default=default_model,
                   help="a released name (visualbert-vqa-pre, ...; converted weights must be in PaddleNLP's "
                        "model home), a directory written by save_pretrained / visualbert.convert / a training "
                        "run (its model/ is used), a .pdparams file inside such a directory, or a config .json "
                        "to train from scratch")
    g.add_argument("--bert_model_name", default="bert-base-uncased",
                   help="tokenizer: bert-base-uncased (the vocabulary ships with this package) or a vocab.txt / "
                        "tokenizer directory")
    g.add_argument("--no_cpu_kernels", dest="cpu_kernels", action="store_false",
                   help="on CPU, run the model on Paddle's stock layers instead of visualbert.cpu's faster "
                        "ones (same results; for comparison or if a oneDNN kernel fails)")
    return parser


def resolve_model_path(name_or_path):
    """Map what users pass to --model_name_or_path onto something from_pretrained / a config reads."""
    path = name_or_path
    if path.endswith(".pdparams") and os.path.isfile(path):
        path = os.path.dirname(path) or "."
    if os.path.isdir(path) and not _has_config(path):
        for sub in ("model", "best"):  # a training run's output dir
            if _has_config(os.path.join(path, sub)):
                return os.path.join(path, sub)
        raise SystemExit(f"error: {name_or_path}: no model_config.json / config.json here or in its model/ or best/")
    return path


# PaddleNLP reads the first of these a directory has.
_CONFIG_FILES = ("config.json", "model_config.json")
_WEIGHT_FILES = ("model_state.pdparams", "model.safetensors", "model_state.pdparams.index.json",
                 "model.safetensors.index.json")
_CONVERT_HINT = "convert PyTorch checkpoints first: python -m visualbert.convert --src CHECKPOINT --dst DIR"
_HEAD_DESCRIPTIONS = {
    "VisualBertModel": "no task head",
    "VisualBertForPreTraining": "the pre-training heads",
    "VisualBertForQuestionAnswering": "a VQA head",
    "VisualBertForVisualReasoning": "an NLVR2 head",
    "VisualBertForMultipleChoice": "a multiple-choice head",
    "VisualBertForRegionToPhraseAlignment": "a region-to-phrase head",
}


def _has_config(d):
    return any(os.path.isfile(os.path.join(d, f)) for f in _CONFIG_FILES)


def read_json(path):
    """A JSON file's value; errors name the file and where its JSON breaks."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _read_config(path, **changes):
    """A config file -> VisualBertConfig (with ``changes``); a bad file is one line naming it."""
    try:
        fields = read_json(path)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not isinstance(fields, dict):
        raise SystemExit(f"error: {path}: expected a JSON object of config fields")
    try:
        return modeling.VisualBertConfig(**{**fields, **changes})
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {path}: {e}") from None


def _released_name(name):
    name = name[len("uclanlp/"):] if name.startswith("uclanlp/") else name
    return name if name in modeling.RELEASED_MODELS else None


def _checkpoint_config(name_or_path, path):
    """The config of the checkpoint at ``path``, checked before any weight is read."""
    released = _released_name(path)
    if released and not os.path.isdir(path):
        return modeling.VisualBertConfig(**modeling.VisualBertConfig.pretrained_init_configuration[released])
    if not os.path.isdir(path):
        raise SystemExit(f"error: --model_name_or_path {name_or_path}: no such file or directory, and not a released "
                         f"name ({', '.join(modeling.RELEASED_MODELS)}); nothing is downloaded, {_CONVERT_HINT}")
    config = _read_config(next(os.path.join(path, f) for f in _CONFIG_FILES if os.path.isfile(os.path.join(path, f))))
    # Loaded as Paddle weights, PyTorch Linear weights would go in untransposed.
    if getattr(config, "transformers_version", None) or os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        raise SystemExit(f"error: {path} is a HuggingFace (PyTorch) checkpoint; {_CONVERT_HINT}")
    if not any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES):
        raise SystemExit(f"error: {path}: a config but no weights ({_WEIGHT_FILES[0]}); {_CONVERT_HINT}")
    return config


def _check_head(cls, name_or_path, config, new_head, num_labels):
    """Refuse a checkpoint whose head is for another task, or sized for other labels.

    A checkpoint without ``cls``'s head (pre-training heads, a bare encoder) starts a fresh one when
    ``new_head`` (fine-tuning); prediction needs the trained head itself.
    """
    have, want = (config.architectures or [None])[0], cls.__name__
    if have not in _HEAD_DESCRIPTIONS:
        return  # a config that does not say which head it was saved with
    if have == want:
        if num_labels is not None and config.num_labels != num_labels:
            raise SystemExit(f"error: {name_or_path}: its {have} head has {config.num_labels} outputs, this run "
                             f"needs {num_labels} (fine-tune from a pre-trained checkpoint to start a new head)")
        return
    if new_head and have in ("VisualBertModel", "VisualBertForPreTraining"):
        return
    hint = ("fine-tune from a pre-trained checkpoint or one trained for this task" if new_head
            else "predict with a checkpoint fine-tuned for this task")
    raise SystemExit(f"error: {name_or_path}: the checkpoint has {_HEAD_DESCRIPTIONS[have]} ({have}), this script "
                     f"needs {_HEAD_DESCRIPTIONS[want]} ({want}); {hint}")


def load_model(cls, name_or_path, visual_embedding_dim=None, new_head=True, cpu_kernels=True, **overrides):
    """Load ``cls`` from a released name, a directory or a config file (fresh weights).

    ``visual_embedding_dim`` is the features' dimension: a config trained from scratch takes it, a
    checkpoint whose projection expects another dimension is refused here rather than mid-step.
    ``new_head``: whether a checkpoint without ``cls``'s head may start a fresh one (see _check_head).
    Every refusal is one ``error:`` line; nothing is ever downloaded.
    ``cpu_kernels``: when the current device is the CPU, run the model on ``visualbert.cpu``'s layers.
    """
    model = _load_model(cls, name_or_path, visual_embedding_dim, new_head, **overrides)
    if cpu_kernels and paddle.get_device() == "cpu":
        cpu.accelerate(model)
    return model


def _load_model(cls, name_or_path, visual_embedding_dim, new_head, **overrides):
    path = resolve_model_path(name_or_path)
    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise SystemExit(f"error: config file {path} does not exist")
        if visual_embedding_dim is not None:
            overrides["visual_embedding_dim"] = visual_embedding_dim
        return cls(_read_config(path, **overrides))
    config = _checkpoint_config(name_or_path, path)
    _check_head(cls, name_or_path, config, new_head, overrides.get("num_labels"))
    try:
        model = cls.from_pretrained(path, **overrides)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    if visual_embedding_dim is not None and model.config.visual_embedding_dim != visual_embedding_dim:
        raise SystemExit(f"error: {name_or_path} expects {model.config.visual_embedding_dim}-dim region features, "
                         f"but the features have {visual_embedding_dim} (pick the matching --image_feature_type or model)")
    return model


@contextlib.contextmanager
def user_errors():
    """Around a script's setup: bad data or paths end the run with one line, not a traceback."""
    try:
        yield
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def tokenizer_from_args(args):
    from .processing import get_tokenizer

    name = args.bert_model_name
    if name == "bert-base-uncased":
        return get_tokenizer()
    if os.path.isdir(name):
        name = os.path.join(name, "vocab.txt")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"--bert_model_name {args.bert_model_name}: expected bert-base-uncased, a vocab.txt "
                                "or a directory holding one")
    return get_tokenizer(name)
