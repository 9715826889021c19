"""Turn PyTorch VisualBERT / BERT checkpoints into Paddle checkpoint dirs that ``from_pretrained`` loads.

    python -m visualbert.convert --src SRC --dst DST [--head HEAD] [--config NAME_OR_JSON]

SRC may be
  * a HuggingFace VisualBERT dir (config.json + model.safetensors or pytorch_model.bin);
  * an original uclanlp ``.th`` file (keys ``bert.bert.*``, ``bert.cls.*``, ``bert.classifier.*``);
    ``--config`` names one of the nine released configs or a config.json. The VCR checkpoints also
    hold their image encoder (``detector.*``): it is kept, and the model becomes the VCR head that
    carries it (``visualbert.vcr_detector``), its size read from the weights;
  * a HuggingFace BERT dir (bert-base-uncased style): a fresh VisualBERT whose text side holds the
    BERT weights, the paper's initialisation; ``--resnet`` adds ImageNet ResNet-50 weights to a VCR
    model's image encoder.
Parameter names are HuggingFace's, so the conversion is a copy with every Linear weight
transposed (Paddle stores [in, out]). torch is not needed, and pickles are read through an
allow-list. DST is written through a temporary sibling dir renamed into place on success only.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

from . import quiet

if __name__ == "__main__":  # the command line: before modeling imports paddle, without third-party noise
    quiet.silence()

from paddlenlp.utils.log import logger as paddlenlp_logger

from . import modeling
from .environment import check_not_input, is_inside
from .errors import run_command
from .configuration import released_name
from .formats.common import read_json
from .modeling import RELEASED_MODELS, VisualBertConfig
from .safeload import UnsafePickleError, load_safetensors
from .torch_format import load_torch_file
from .vcr_detector import BATCHNORM_BUFFERS, VCR_HEADS, detector_state_from_resnet

HEADS = {name: head.model for name, head in {**modeling.HEADS, **VCR_HEADS}.items()}
# A checkpoint with detector weights is the VCR variant of its head.
_WITH_DETECTOR = {"multiple_choice": "vcr", "pretraining": "vcr_pretraining", "vcr": "vcr",
                  "vcr_pretraining": "vcr_pretraining"}
_HEAD_OF_ARCH = {cls.__name__: head for head, cls in HEADS.items()}
_TASK_HEADS = ("vqa", "nlvr2", "multiple_choice", "region_alignment")
_DECODER, _DECODER_BIAS = "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"
_MLM_BIAS = "cls.predictions.bias"
_WORD_EMBEDDINGS = "visual_bert.embeddings.word_embeddings.weight"
# Config entries that describe the file, not the model.
_CONFIG_NOISE = ("architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
                 "gradient_checkpointing", "use_cache", "position_embedding_type", "classifier_dropout")
_BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "initializer_range", "layer_norm_eps")


def read_weights(path):
    """A safetensors or PyTorch weights file -> {name: numpy array}, unwrapping training wrappers."""
    if path.endswith(".safetensors"):
        state = load_safetensors(path)
    else:
        try:
            state = load_torch_file(path)
        except (UnsafePickleError, FileNotFoundError, ValueError):
            raise
        except Exception as e:  # a truncated or corrupt pickle stream
            raise ValueError(f"{path}: unreadable PyTorch file ({type(e).__name__}: {e})") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _hf_weights_file(src):
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(src, name)):
            return os.path.join(src, name)
    raise FileNotFoundError(f"{src}: no model.safetensors or pytorch_model.bin (sharded checkpoints are not supported)")


def _config_from_dict(raw, source):
    fields = {k: v for k, v in raw.items() if k not in _CONFIG_NOISE}
    if "id2label" in fields:
        fields["id2label"] = {int(k): v for k, v in fields["id2label"].items()}
    try:
        return VisualBertConfig(**fields)
    except ValueError as e:  # e.g. an activation the model does not have
        raise ValueError(f"{source}: {e}") from None


def _head_for(head, raw, source):
    """--head, else the head the config's ``architectures`` names.

    A task head's classifier means its own task's labels: an NLVR2 checkpoint's 2-way true/false
    layer would load into ``--head vqa`` as a 2-answer VQA head without complaint, so a task head
    other than the checkpoint's own is refused (``base`` keeps the encoder of any checkpoint).
    """
    saved = next((_HEAD_OF_ARCH[a] for a in raw.get("architectures") or [] if a in _HEAD_OF_ARCH), None)
    if head is not None:
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        if head in _TASK_HEADS and saved in _TASK_HEADS and head != saved:
            raise ValueError(f"{source}: --head {head} does not match the checkpoint, which holds a {saved} head "
                             f"({HEADS[saved].__name__}) whose classifier means {saved}'s labels; convert with "
                             f"--head {saved}, or --head base to keep only the encoder")
        return head
    if saved is not None:
        return saved
    raise ValueError(f"{source}: cannot tell which head this checkpoint is for; pass --head ({', '.join(HEADS)})")


def _released_or_json(config):
    name = released_name(config)
    if name:
        return dict(VisualBertConfig.pretrained_init_configuration[name])
    if os.path.isfile(config):
        return read_json(config, "a model config JSON")
    raise ValueError(f"--config {config!r} is neither a released name ({', '.join(RELEASED_MODELS)}) "
                     "nor a config.json file")


def _detector_key(key):
    """The original's detector name -> ours (the same but for BatchNorm buffers); None to drop."""
    head, _, last = key.rpartition(".")
    if last in BATCHNORM_BUFFERS:
        return None if BATCHNORM_BUFFERS[last] is None else f"{head}.{BATCHNORM_BUFFERS[last]}"
    return key


def detector_settings_of(state):
    """The ``vcr_detector`` config entry that fits a state dict's ``detector.*`` weights."""
    def blocks(prefix):
        found = {k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix) and k.endswith(".conv1.weight")}
        return len(found)

    try:
        embed = state["detector.object_embed.weight"]
        return {"width": int(state["detector.backbone.0.weight"].shape[0]),
                "blocks": [blocks(f"detector.backbone.{i}.") for i in (4, 5, 6)]
                + [blocks("detector.after_roi_align.0.")],
                "num_classes": int(embed.shape[0]), "class_embed_dim": int(embed.shape[1]),
                "mask_channels": int(state["detector.mask_upsample.weight"].shape[0])}
    except KeyError as e:
        raise ValueError(f"the detector weights lack {e.args[0]} (expected the original VCR image encoder)") from None


def _original_key(key):
    """uclanlp name -> transformers name (the detector's stays as the original names it)."""
    if key.startswith("detector."):
        return _detector_key(key)
    for old, new in (("bert.bert.", "visual_bert."), ("bert.cls.", "cls."), ("bert.classifier.", "cls.")):
        if key.startswith(old):
            key = new + key[len(old):]
            break
    else:
        return key  # left as is: reported as unexpected if the model has no such weight
    for old, new in ((".embeddings.projection.", ".embeddings.visual_projection."),
                     (".token_type_embeddings_visual.", ".visual_token_type_embeddings."),
                     (".position_embeddings_visual.", ".visual_position_embeddings.")):
        key = key.replace(old, new)
    return key


def _bert_key(key):
    """HF BERT name -> VisualBERT name (old BERT files call LayerNorm's parameters gamma/beta)."""
    if key.endswith(".gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith(".beta"):
        key = key[: -len("beta")] + "bias"
    if key.startswith("bert."):
        return "visual_bert." + key[len("bert."):]
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        return "visual_bert." + key
    return key


def _fit_prefix(state, model):
    """Move between head checkpoints (``visual_bert.*``) and base-model ones (no prefix)."""
    base_target = isinstance(model, modeling.VisualBertModel)
    prefixed = any(k.startswith("visual_bert.") for k in state)
    if base_target and prefixed:
        return {k[len("visual_bert."):]: v for k, v in state.items() if k.startswith("visual_bert.")}
    if not base_target and not prefixed:
        return {("visual_bert." + k if k.split(".")[0] in ("embeddings", "encoder", "pooler", "additional_layer")
                 else k): v for k, v in state.items()}
    return state


def _untie(state, model):
    """Give the model one value per tied parameter, whichever of its names the file stored it under.

    A tied weight is one tensor with two names, and transformers may save it under one name only:
    the MLM decoder is the word-embedding table (saved without ``cls.predictions.decoder.weight``,
    whichever head carries it), and the decoder bias is the prediction bias.
    """
    state = dict(state)
    decoder_bias = state.pop(_DECODER_BIAS, None)
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    if predictions is None:
        return state
    if decoder_bias is not None:
        state.setdefault(_MLM_BIAS, decoder_bias)
    if predictions.decoder is None:
        state.pop(_DECODER, None)  # the model multiplies by the word-embedding table itself
    elif _DECODER not in state and _WORD_EMBEDDINGS in state:
        state[_DECODER] = state[_WORD_EMBEDDINGS]  # both [vocab, hidden]; transposed below as a Linear weight
    return state


def load_into(model, state, source, head, allow_missing=()):
    """Copy a transformers-named state dict into ``model``, transposing Linear weights.

    Every expected weight must be present (except those matching ``allow_missing`` prefixes) and
    every given one used, with matching shapes; otherwise one error naming the keys.
    """
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    state = _untie(_fit_prefix(state, model), model)
    linear = {f"{name}.weight" for name, layer in model.named_sublayers() if isinstance(layer, modeling.nn.Linear)}
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.startswith(tuple(allow_missing)))
    unexpected = sorted(k for k in state if k not in expected)
    what = f"{source}: does not fit {type(model).__name__} (--head {head})"
    if missing:
        raise ValueError(f"{what}: missing {_few(missing)}")
    if unexpected:
        raise ValueError(f"{what}: unexpected {_few(unexpected)}")
    converted = {}
    for key, value in state.items():
        value = value.T if key in linear else value
        want = tuple(expected[key].shape)
        if tuple(value.shape) != want:
            raise ValueError(f"{source}: shape mismatch for {key}: checkpoint {tuple(value.shape)}, model {want}")
        converted[key] = np.ascontiguousarray(value).astype(expected[key].numpy().dtype, copy=False)
    # Keys allowed to be missing keep the model's fresh values; passing them avoids Paddle's warnings.
    model.set_state_dict({**{k: v for k, v in expected.items() if k not in converted}, **converted})
    return model


def _few(keys):
    return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def convert_hf(src, head=None):
    config_file = os.path.join(src, "config.json")
    raw = read_json(config_file, "a HuggingFace VisualBERT config.json")
    head = _head_for(head, raw, src)
    model = HEADS[head](_config_from_dict(raw, config_file))
    return load_into(model, read_weights(_hf_weights_file(src)), src, head)


def convert_original(src, config, head=None):
    if config is None:
        raise ValueError(f"{src}: an original .th checkpoint needs --config (one of {', '.join(RELEASED_MODELS)} "
                         "or a config.json)")
    raw = _released_or_json(config)
    head = _head_for(head, raw, f"--config {config}")
    state = {}
    for key, value in read_weights(src).items():
        new = _original_key(key)
        if new is not None:
            state[new] = value
    detector = {k: v for k, v in state.items() if k.startswith("detector.")}
    # The VCR image encoder is recognised by its class embedding; other detector weights (none of
    # the released non-VCR checkpoints has any) mean nothing to VisualBERT and are left out.
    if "detector.object_embed.weight" in detector and head in _WITH_DETECTOR:
        head = _WITH_DETECTOR[head]
        raw = {**raw, "vcr_detector": {**(raw.get("vcr_detector") or {}), **detector_settings_of(detector)}}
    elif head.startswith("vcr"):
        raise ValueError(f"{src}: --head {head} needs the VCR image encoder's weights (detector.*), "
                         "and the file has none")
    else:
        state = {k: v for k, v in state.items() if k not in detector}  # a head without an image encoder
    return load_into(HEADS[head](_config_from_dict(raw, f"--config {config}")), state, src, head)


def convert_bert(src, head=None, config=None, visual_embedding_dim=None, seed=0):
    import paddle

    config_file = os.path.join(src, "config.json")
    bert = read_json(config_file, "a HuggingFace BERT config.json")
    raw = _released_or_json(config) if config else {}
    fields = {k: bert[k] for k in _BERT_FIELDS if k in bert}
    fields.update({k: v for k, v in raw.items() if k not in _BERT_FIELDS})
    if visual_embedding_dim is not None:
        fields["visual_embedding_dim"] = visual_embedding_dim
    if "visual_embedding_dim" not in fields:
        raise ValueError(f"{src}: BERT initialisation needs --config or --visual_embedding_dim")
    if head is None and not raw.get("architectures"):
        head = "pretraining"  # the paper pre-trains from BERT
    head = _head_for(head, raw, src)
    paddle.seed(seed)
    model = HEADS[head](_config_from_dict(fields, config_file))  # hidden sizes and activation come from BERT
    state = {}
    for key, value in read_weights(_hf_weights_file(src)).items():
        new = _bert_key(key)
        if new.startswith("cls.") and head not in ("pretraining", "vcr_pretraining"):
            continue  # BERT's pre-training heads mean nothing to a task head
        state[new] = value
    fresh = ("visual_bert.embeddings.visual_", "embeddings.visual_", "visual_bert.additional_layer.",
             "additional_layer.")
    if head not in ("pretraining", "base", "vcr_pretraining"):
        fresh += ("cls.", "attention.")
    if head.startswith("vcr"):
        fresh += ("detector.",)  # BERT has no image encoder: it starts fresh
    load_into(model, state, src, head, allow_missing=fresh)
    model.base_model.embeddings.copy_text_tables_to_visual()
    return model


# What a Paddle checkpoint dir is made of: convert writes some of these, and with --overwrite removes
# the others from DST, since PaddleNLP would read them in preference to (or mixed with) the new weights.
# Nothing else in DST is touched.
CHECKPOINT_FILES = ("config.json", "model_config.json", "model_state.pdparams", "model.safetensors",
                    "model_state.pdparams.index.json", "model.safetensors.index.json", "generation_config.json")


def load_resnet(model, path):
    """Put ImageNet ResNet weights (torchvision .pth or paddle.vision .pdparams) into a VCR model's image
    encoder: the original started its encoder from them. Every encoder weight must be given, with its shape."""
    from .safeload import load_paddle

    detector = getattr(model, "detector", None)
    if detector is None:
        raise ValueError(f"--resnet {path}: only the VCR models have an image encoder (--head vcr or vcr_pretraining)")
    state = load_paddle(path) if path.endswith(".pdparams") else read_weights(path)
    try:
        weights = detector_state_from_resnet(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    expected = {k: v for k, v in detector.state_dict().items() if k.startswith(("backbone.", "after_roi_align."))}
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: does not fit the image encoder: missing {_few(missing) or 'none'}, "
                         f"unexpected {_few(unexpected) or 'none'}")
    for key, value in weights.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{path}: shape mismatch for {key}: file {tuple(value.shape)}, encoder "
                             f"{tuple(expected[key].shape)}")
    detector.set_state_dict({k: np.asarray(v, dtype=expected[k].numpy().dtype) for k, v in weights.items()})
    return model


def convert(src, dst, head=None, config=None, visual_embedding_dim=None, overwrite=False, seed=0, resnet=None):
    """Convert ``src`` and write the Paddle checkpoint dir ``dst``; returns the model.

    ``overwrite`` replaces the checkpoint files of a non-empty ``dst`` (``CHECKPOINT_FILES``) and
    keeps everything else in it. ``resnet``: ImageNet ResNet weights for a VCR model's image encoder
    (see ``load_resnet``).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise FileExistsError(f"{dst}: a file is in the way; --dst is a directory")
    if os.path.exists(dst) and os.listdir(dst) and not overwrite:
        raise FileExistsError(f"{dst}: already exists and is not empty (pass --overwrite to replace its checkpoint files)")
    if os.path.exists(src) and is_inside(src, dst):
        raise ValueError(f"--src {src} lies inside --dst {dst}: writing there would replace the checkpoint being "
                         "converted; pick another --dst")
    check_not_input("--dst", dst, [("--src", src)])
    if os.path.isfile(src):
        model = convert_original(src, config, head)
    elif os.path.isdir(src):
        model_type = read_json(os.path.join(src, "config.json"), "a HuggingFace config.json").get("model_type")
        if model_type == "visual_bert":
            model = convert_hf(src, head)
        elif model_type == "bert":
            model = convert_bert(src, head, config, visual_embedding_dim, seed)
        else:
            raise ValueError(f"{os.path.join(src, 'config.json')}: model_type {model_type!r}; "
                             "expected 'visual_bert' or 'bert'")
    else:
        raise FileNotFoundError(f"{src}: no such file or directory")
    if resnet is not None:
        load_resnet(model, os.fspath(resnet))

    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(dst))}.tmp-", dir=parent)
    try:
        model.save_pretrained(tmp)
        if os.path.isdir(dst) and os.listdir(dst):
            _replace_checkpoint_files(tmp, dst)
        else:
            if os.path.isdir(dst):
                os.rmdir(dst)  # empty
            os.rename(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model


def _replace_checkpoint_files(new, dst):
    """Move the checkpoint files of ``new`` into ``dst``; drop ``dst``'s other checkpoint files, keep the rest."""
    written = set(os.listdir(new))
    for name in CHECKPOINT_FILES:
        if name not in written and os.path.isfile(os.path.join(dst, name)):
            os.remove(os.path.join(dst, name))
    for name in sorted(written):
        os.replace(os.path.join(new, name), os.path.join(dst, name))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m visualbert.convert",
        description="Convert a HuggingFace VisualBERT dir, an original uclanlp .th checkpoint or a HuggingFace "
                    "BERT dir into a Paddle checkpoint dir for VisualBert*.from_pretrained(DST).",
    )
    parser.add_argument("--src", required=True, help="HF VisualBERT dir, original .th file, or HF BERT dir")
    parser.add_argument("--dst", required=True, help="output dir (must not exist or be empty unless --overwrite)")
    parser.add_argument("--head", choices=list(HEADS),
                        help="model class to build; default: from config.json 'architectures' (BERT: pretraining)")
    parser.add_argument("--config", help="for .th / BERT sources: a released name (e.g. visualbert-vqa-coco-pre) "
                                         "or a config.json path")
    parser.add_argument("--visual_embedding_dim", type=int, help="BERT sources: region feature size")
    parser.add_argument("--seed", type=int, default=0, help="BERT sources: seed for the freshly initialised weights")
    parser.add_argument("--resnet", metavar="FILE",
                        help="VCR heads: ImageNet ResNet-50 weights (torchvision .pth or paddle.vision .pdparams) for "
                             "the image encoder, as the original started it (with a BERT source: the paper's start)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoint files of a non-empty DST (its other files are kept)")
    args = parser.parse_args(argv)
    paddlenlp_logger.set_level("WARNING")  # its INFO lines name the temporary dir, not DST
    def work():
        model = convert(args.src, args.dst, args.head, args.config, args.visual_embedding_dim, args.overwrite,
                        args.seed, resnet=args.resnet)
        print(f"wrote {args.dst} ({type(model).__name__}, {len(model.state_dict())} tensors) from {args.src}")

    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
