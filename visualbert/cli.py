"""What the command-line scripts share beyond the training loop: model loading and common flags."""
import contextlib
import json
import os

from . import modeling


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


def _has_config(d):
    return any(os.path.isfile(os.path.join(d, f)) for f in ("model_config.json", "config.json"))


def load_model(cls, name_or_path, visual_embedding_dim=None, **overrides):
    """Load ``cls`` from a released name, a directory or a config file (fresh weights).

    ``visual_embedding_dim`` is the features' dimension: a config trained from scratch takes it, a
    checkpoint whose projection expects another dimension is refused here rather than mid-step.
    """
    path = resolve_model_path(name_or_path)
    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise SystemExit(f"error: config file {path} does not exist")
        with open(path) as f:
            config = json.load(f)
        config.update(overrides)
        if visual_embedding_dim is not None:
            config["visual_embedding_dim"] = visual_embedding_dim
        return cls(modeling.VisualBertConfig(**config))
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
