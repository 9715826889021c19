"""Loading what a script's flags point at: a model (released name, directory, config file) and a tokenizer.

Every refusal is one ``error:`` line naming the path and what was expected; nothing is ever downloaded.
"""
import os

import paddle

from . import cpu, modeling, vcr_detector
from .configuration import released_name
from .formats.common import read_json


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
_HEAD_DESCRIPTIONS = {head.model.__name__: head.described
                      for head in {**modeling.HEADS, **vcr_detector.VCR_HEADS}.values()}
# Checkpoints whose head a class takes over as it is (the VCR classes add only the image encoder).
_SAME_HEAD = {"VisualBertForVCR": ("VisualBertForMultipleChoice",),
              "VisualBertForVCRPreTraining": ("VisualBertForPreTraining",)}


def _has_config(d):
    return any(os.path.isfile(os.path.join(d, f)) for f in _CONFIG_FILES)


def _read_config(path, **changes):
    """A config file -> VisualBertConfig (with ``changes``); a bad file is one line naming it."""
    try:
        fields = read_json(path, "a model config JSON")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not isinstance(fields, dict):
        raise SystemExit(f"error: {path}: expected a JSON object of config fields")
    try:
        return modeling.VisualBertConfig(**{**fields, **changes})
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {path}: {e}") from None


def _checkpoint_config(name_or_path, path):
    """The config of the checkpoint at ``path``, checked before any weight is read."""
    released = released_name(path)
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
    if have == want or have in _SAME_HEAD.get(want, ()):
        if num_labels is not None and config.num_labels != num_labels:
            raise SystemExit(f"error: {name_or_path}: its {have} head has {config.num_labels} outputs, this run "
                             f"needs {num_labels} (fine-tune from a pre-trained checkpoint to start a new head)")
        return
    if new_head and have in ("VisualBertModel", "VisualBertForPreTraining", "VisualBertForVCRPreTraining"):
        return
    hint = ("fine-tune from a pre-trained checkpoint or one trained for this task" if new_head
            else "predict with a checkpoint fine-tuned for this task")
    raise SystemExit(f"error: {name_or_path}: the checkpoint has {_HEAD_DESCRIPTIONS[have]} ({have}), this script "
                     f"needs {_HEAD_DESCRIPTIONS[want]} ({want}); {hint}")


def uses_spatial_features(name_or_path, features):
    """Whether the model appends each region's box geometry to its features (``add_spatial_features``).

    A checkpoint says so in its config (the released ones do not), or by a ``visual_embedding_dim`` of
    the features' dimension plus the box values (a BERT converted for them). A config file trained from
    scratch says so when it sets the field; otherwise it is on whenever ``features`` keep box
    geometry, because where a region is helps every task and the store has it for free.
    """
    from .configuration import SPATIAL_DIM

    has_boxes = getattr(features, "has_boxes", False)
    path = resolve_model_path(name_or_path)
    if path.endswith(".json"):
        fields = read_json(path, "a model config JSON") if os.path.isfile(path) else {}
        spatial = bool(fields.get("add_spatial_features", has_boxes)) if isinstance(fields, dict) else False
    else:
        config = _checkpoint_config(name_or_path, path)
        # a projection sized for the features plus the box values can only mean spatial features (a
        # BERT converted with --visual_embedding_dim 2054 for the 2048-d detector features, as the paper)
        sized_for_boxes = has_boxes and config.visual_embedding_dim == features.dim + SPATIAL_DIM
        spatial = bool(getattr(config, "add_spatial_features", False)) or sized_for_boxes
    if spatial and not has_boxes:
        raise SystemExit(f"error: {name_or_path} takes each region's box geometry with its features "
                         f"(add_spatial_features), but {features.where()} keeps none; use a store written by "
                         "python -m visualbert.extract, or `features import` of features with boxes")
    return spatial


def load_task_model(cls, name_or_path, features, new_head=True, cpu_kernels=True, **overrides):
    """``load_model`` for features from a store: with spatial features (see ``uses_spatial_features``)
    the model's input is the features' dimension plus the SPATIAL_DIM box values. Returns (model, spatial)."""
    from .configuration import SPATIAL_DIM

    spatial = uses_spatial_features(name_or_path, features)
    if spatial:
        overrides["add_spatial_features"] = True
    model = load_model(cls, name_or_path, visual_embedding_dim=features.dim + (SPATIAL_DIM if spatial else 0),
                       new_head=new_head, cpu_kernels=cpu_kernels, **overrides)
    return model, spatial


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


def tokenizer_from_args(args):
    from .inputs import get_tokenizer

    name = args.bert_model_name
    if name == "bert-base-uncased":
        return get_tokenizer()
    if os.path.isdir(name):
        name = os.path.join(name, "vocab.txt")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"--bert_model_name {args.bert_model_name}: expected bert-base-uncased, a vocab.txt "
                                "or a directory holding one")
    return get_tokenizer(name)
