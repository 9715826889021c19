"""Every script's command line: the flag groups the scripts share, and each script's parser.

The scripts parse with ``parse_pretrain_args`` / ``parse_finetune_args`` / ``parse_predict_args`` / ...,
which return the run's settings objects (``visualbert.training_args``), and hand them to
``visualbert.tasks``; ``tools/cli_docs.py`` renders their --help into docs/cli.md. A flag is made from
the settings field of its name (its default, help and check), so each is written once; a script names
only where it differs (its own default, a wording that fits its data).
"""
import argparse
import dataclasses
import os

from .argtypes import positive_int
from .examples import DEFAULT_FEATURE_TYPE
from .features import FEATURE_TYPES
from .inference import add_engine_arg
from .tasks import PRETRAIN_SPLITS
from .training_args import PredictionArguments, TaskArguments, TrainingArguments

# ---------------------------------------------------------------------------- flags from the settings' fields


def add_setting(group, settings, name, **override):
    """Add the flag of field ``name`` of the dataclass ``settings``, with the field's default, help and
    parsing; ``override`` changes any of them for one script (its default, its help wording)."""
    f = next(f for f in dataclasses.fields(settings) if f.name == name)
    kwargs = dict(f.metadata)
    flag = kwargs.pop("flag", "--" + name)
    if f.default is dataclasses.MISSING:
        kwargs["required"] = True
    elif isinstance(f.default, bool):
        kwargs["action"] = "store_false" if f.default else "store_true"
    else:
        kwargs["default"] = f.default
    if flag != "--" + name:
        kwargs["dest"] = name
    kwargs.update(override)
    group.add_argument(flag, **kwargs)


def settings_from(parser, settings, args, **values):
    """``settings`` (a dataclass) from the parsed ``args`` fields of the same name, plus ``values``;
    a value the dataclass refuses ends with argparse's usage line and its one-line message."""
    names = {f.name for f in dataclasses.fields(settings)}
    given = {name: value for name, value in vars(args).items() if name in names}
    try:
        return settings(**{**given, **values})
    except ValueError as e:
        parser.error(str(e))


# ---------------------------------------------------------------------------- shared groups

# the training-loop fields the scripts show among their data flags (the fine-tuning ones as --batch_size)
_BATCH_FIELDS = ("train_batch_size", "eval_batch_size")


def add_training_args(parser, **defaults):
    """The flags every training script shares, one per ``TrainingArguments`` field; ``defaults``
    overrides per script."""
    g = parser.add_argument_group("training")
    for f in dataclasses.fields(TrainingArguments):
        if f.name not in _BATCH_FIELDS:
            add_setting(g, TrainingArguments, f.name, **({"default": defaults[f.name]} if f.name in defaults else {}))
    return parser


def training_settings(parser, args, **values):
    """The ``TrainingArguments`` of a training script's parsed flags."""
    return settings_from(parser, TrainingArguments, args, **values)


def _task_flag(group, name, **override):
    add_setting(group, TaskArguments, name, **override)


def _prediction_flag(group, name, **override):
    add_setting(group, PredictionArguments, name, **override)


def add_model_args(parser, default_model):
    g = parser.add_argument_group("model")
    _task_flag(g, "model_type")
    _task_flag(g, "model_name_or_path", default=default_model)
    _task_flag(g, "bert_model_name")
    _task_flag(g, "cpu_kernels")
    return parser


def add_data_args(parser, task):
    g = parser.add_argument_group("data")
    _task_flag(g, "input_dir",
               help="data root (X_COCO/ for vqa2, X_NLVR/ for nlvr2); needed unless --features names the features")
    _task_flag(g, "annotation_dir")
    _task_flag(g, "image_feature_type", default=DEFAULT_FEATURE_TYPE[task], choices=sorted(FEATURE_TYPES),
          help=f"region features (default {DEFAULT_FEATURE_TYPE[task]})")
    _task_flag(g, "max_seq_length")
    add_feature_args(g)
    return g


def add_feature_args(group):
    _task_flag(group, "features")
    _task_flag(group, "max_regions")
    _task_flag(group, "feature_dtype")


def add_vqa_json_args(group, sets):
    """Flags for VQA data in the official JSON format: ``--<set>_questions`` / ``--<set>_annotations``
    for each of ``sets`` (plain ``--questions`` / ``--annotations`` for the empty name), ``--image_key``
    (and ``--<set>_image_key`` when there are two sets, whose images often lie in two folders) and
    ``--image_map``."""
    for name in sets:
        prefix = f"{name}_" if name else ""
        what = f"{name} set" if name else "questions to predict"
        _task_flag(group, prefix + "questions",
              help=f"{what} in the official VQA questions format, any split name (instead of an imdb split)")
        _task_flag(group, prefix + "annotations",
              help=f"answers to --{prefix}questions in the official VQA annotations format"
                   + ("" if name != "eval" else " (needed to score them)")
                   + (" (optional: prints the accuracy)" if not name else ""))
    _task_flag(group, "image_key",
          help="template from a question's image_id (an integer, or a string such as grace_hopper) to its feature key "
               "in --features, e.g. COCO_val2014_{image_id:012d} or val2014/COCO_val2014_{image_id:012d} (default: "
               "{image_id})")
    for name in sets if len(sets) > 1 else ():
        _task_flag(group, f"{name}_image_key",
              help=f"the template for --{name}_questions only (default: --image_key), e.g. "
                   f"{'train2014/COCO_train2014' if name == 'train' else 'val2014/COCO_val2014'}"
                   "_{image_id:012d} for images extracted from COCO's folders")
    _task_flag(group, "image_map")


def add_predict_args(group, default_split, output_help):
    """Flags the two run_predict.py scripts share (after add_data_args)."""
    _prediction_flag(group, "split", default=default_split)
    _prediction_flag(group, "output", help=output_help)
    for name in ("batch_size", "num_workers", "device", "use_amp", "amp_dtype", "seed"):
        _prediction_flag(group, name)


# ---------------------------------------------------------------------------- the scripts' parsers


def _parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def _finetuning_settings(parser, args):
    """(TaskArguments, TrainingArguments) of a fine-tuning script, whose --batch_size is the training
    and the evaluation batch size, and whose --eval_split none turns evaluation off."""
    eval_split = None if args.eval_split == "none" else args.eval_split
    training = training_settings(parser, args, train_batch_size=args.batch_size, eval_batch_size=args.batch_size)
    return settings_from(parser, TaskArguments, args, eval_split=eval_split), training


def parse_pretrain_args(description, argv=None):
    """run_pretrain.py's command line: (TaskArguments, TrainingArguments); the splits and feature
    type default per --dataset."""
    p = _parser(description)
    g = p.add_argument_group("data")
    _task_flag(g, "input_dir", help="data root (X_COCO/, X_NLVR/ or X_VCR/); annotations in <input_dir>/annotations "
                               "unless --annotation_dir; needed unless --features names the features")
    _task_flag(g, "annotation_dir", help="where the annotation files are (default: <input_dir>/annotations, "
                                    "then PaddleNLP's dataset home)")
    _task_flag(g, "dataset", required=True, choices=sorted(PRETRAIN_SPLITS))
    _task_flag(g, "image_feature_type", choices=sorted(FEATURE_TYPES),
          help="region features (default: the original scripts' choice for --dataset)")
    _task_flag(g, "train_split", default=None, help="annotation split to train on (default: train)")
    _task_flag(g, "eval_split", help="split to evaluate on each epoch (default: val / minival / dev; 'none' to skip)")
    _task_flag(g, "max_eval_samples")
    _task_flag(g, "max_seq_length")
    add_feature_args(g)
    _task_flag(g, "image_dir")
    _task_flag(g, "mask_prob")
    _task_flag(g, "no_nlvr2_label")
    add_setting(g, TrainingArguments, "train_batch_size")
    add_setting(g, TrainingArguments, "eval_batch_size")
    add_model_args(p, default_model="visualbert-vqa-coco-pre")
    add_training_args(p, learning_rate=1e-5, num_train_epochs=3)
    args = p.parse_args(argv)
    training = training_settings(p, args)
    train_split, eval_split = PRETRAIN_SPLITS[args.dataset]
    task = settings_from(p, TaskArguments, args, train_split=args.train_split or train_split,
                         eval_split=None if args.eval_split == "none" else (args.eval_split or eval_split),
                         # VCR has no feature files: its model encodes the images itself
                         image_feature_type=args.image_feature_type or DEFAULT_FEATURE_TYPE.get(args.dataset))
    return task, training


def parse_finetune_args(task, description, argv=None):
    """run_vqa2.py's / run_nlvr2.py's command line (``task``: vqa2 or nlvr2): (TaskArguments, TrainingArguments)."""
    p = _parser(description)
    g = add_data_args(p, task)
    _task_flag(g, "task_name", default=task, choices=[task])
    _task_flag(g, "train_split", **({"help": "imdb split to train on: train, trainval, val, ..."} if task == "vqa2" else {}))
    if task == "vqa2":
        _task_flag(g, "eval_split", default="val", help="imdb split scored each epoch (minival with --train_split trainval); "
                                                  "its questions are removed from training; 'none' to skip")
        add_vqa_json_args(g, ("train", "eval"))
        _task_flag(g, "answer_vocab",
              help="answer vocabulary file, or build[:K]: <unk> then the K most frequent training answers (all "
                   "without K); saved as <output_dir>/answer_vocab.txt, which run_predict.py reuses "
                   "(default: the shipped answers_vqa.txt)")
        g.add_argument("--batch_size", type=positive_int, default=64, help="samples per device, training and evaluation")
        _task_flag(g, "loss")
        add_model_args(p, default_model="visualbert-vqa-pre")
        add_training_args(p, learning_rate=2e-5, num_train_epochs=10, save_steps=10000)
    else:
        _task_flag(g, "eval_split", default="dev", help="split scored each epoch ('none' to skip)")
        g.add_argument("--batch_size", type=positive_int, default=16, help="samples per device, training and evaluation")
        add_model_args(p, default_model="visualbert-nlvr2-pre")
        add_training_args(p, learning_rate=2e-5, num_train_epochs=10, save_steps=5000)
    return _finetuning_settings(p, p.parse_args(argv))


def parse_predict_args(task, description, argv=None):
    """VQA2/run_predict.py's / NLVR2/run_predict.py's command line (``task``: vqa2 or nlvr2):
    (TaskArguments, PredictionArguments)."""
    p = _parser(description)
    g = add_data_args(p, task)
    if task == "vqa2":
        add_predict_args(g, "test", "result file to write (default: result_<split>.json in the training run's "
                                    "directory, the one holding the model/ or best/ predicted with, else beside the model; "
                                    "<split> is the --questions file's name when given)")
        add_vqa_json_args(g, ("",))
        _task_flag(g, "answer_vocab",
              help="answer vocabulary file (default: the training run's answer_vocab.txt beside the model or in "
                   "its parent directory, else the shipped answers_vqa.txt)")
        add_model_args(p, default_model="logs/vqa")
    else:
        add_predict_args(g, "test1", "predictions CSV (default: predictions_<split>.csv in the training run's "
                                     "directory, the one holding the model/ or best/ predicted with, else beside the model)")
        add_model_args(p, default_model="logs/nlvr2")
    add_engine_arg(p)
    args = p.parse_args(argv)
    output = args.output or default_prediction_output(p, task, args)
    return settings_from(p, TaskArguments, args), settings_from(p, PredictionArguments, args, output=output)


def _flickr30k_data_args(parser):
    g = parser.add_argument_group("data")
    _task_flag(g, "input_dir", help="data root (X_FLICKR/); the annotations are then in <input_dir>/Flickr30kEntities")
    _task_flag(g, "annotation_dir", help="the Flickr30K Entities release: Sentences/, Annotations/, train.txt / val.txt / "
                                    "test.txt (default: <input_dir>/Flickr30kEntities)")
    _task_flag(g, "image_key", help="template from an image id (the name in Sentences/) to its key in --features (default: "
                               "{image_id})")
    _task_flag(g, "max_seq_length")
    add_feature_args(g)
    return g


def parse_flickr30k_args(description, argv=None):
    """Flickr30K/run_flickr30k.py's command line: (TaskArguments, TrainingArguments); defaults are the
    original fine-tuning config's."""
    p = _parser(description)
    g = _flickr30k_data_args(p)
    _task_flag(g, "train_split", help="image list to train on: train, val, test or a file")
    _task_flag(g, "eval_split", default="val", help="image list scored each epoch ('none' to skip)")
    g.add_argument("--batch_size", type=positive_int, default=32, help="captions per device, training and evaluation")
    add_model_args(p, default_model="visualbert-vqa-coco-pre")
    add_training_args(p, learning_rate=2e-5, num_train_epochs=5, save_steps=5000)
    return _finetuning_settings(p, p.parse_args(argv))


def parse_flickr30k_predict_args(description, argv=None):
    """Flickr30K/run_predict.py's command line: (TaskArguments, PredictionArguments)."""
    p = _parser(description)
    g = _flickr30k_data_args(p)
    add_predict_args(g, "test", "ranked boxes per phrase, JSON (default: predictions_<split>.json in the model's "
                                "run directory)")
    add_model_args(p, default_model="logs/flickr30k")
    args = p.parse_args(argv)
    output = args.output
    if not output:
        model = os.path.normpath(args.model_name_or_path)
        run = os.path.dirname(model) if os.path.basename(model) in ("best", "model") else model
        output = os.path.join(run if os.path.isdir(run) else ".", f"predictions_{os.path.basename(args.split)}.json")
    return settings_from(p, TaskArguments, args), settings_from(p, PredictionArguments, args, output=output)


# ---------------------------------------------------------------------------- VCR


def add_vcr_data_args(parser):
    g = parser.add_argument_group("data")
    _task_flag(g, "input_dir", default="X_VCR",
          help="VCR root: {train,val,test}.jsonl and vcr1images/ (default X_VCR, as the original configs)")
    _task_flag(g, "annotation_dir", help="where the .jsonl files are (default: --input_dir)")
    _task_flag(g, "image_dir", help="the images and their metadata JSON, as img_fn / metadata_fn name them "
                               "(default: <input_dir>/vcr1images)")
    _task_flag(g, "max_seq_length")
    g.add_argument("--batch_size", type=positive_int, default=8,
                   help="questions per device (each with its four choices), training and evaluation")
    return g


def parse_vcr_args(description, argv=None):
    """VCR/run_vcr.py's command line: (TaskArguments, TrainingArguments)."""
    p = _parser(description)
    g = add_vcr_data_args(p)
    _task_flag(g, "mode", required=True)
    _task_flag(g, "train_split")
    _task_flag(g, "eval_split", default="val", help="split scored each epoch ('none' to skip)")
    _task_flag(g, "class_loss_ratio")
    add_model_args(p, default_model="visualbert-vcr-pre")
    add_training_args(p, learning_rate=2e-5, num_train_epochs=8, save_steps=5000)
    return _finetuning_settings(p, p.parse_args(argv))


def parse_vcr_predict_args(description, argv=None):
    """VCR/run_predict.py's command line: (TaskArguments, PredictionArguments)."""
    p = _parser(description)
    g = add_vcr_data_args(p)
    _prediction_flag(g, "split", help="split to predict (test, or val to score it too)")
    _prediction_flag(g, "output", help="leaderboard CSV to write (default: VCR/predictions_<split>.csv)")
    for name in ("num_workers", "device", "use_amp", "amp_dtype", "seed"):
        _prediction_flag(g, name)
    m = p.add_argument_group("models")
    _prediction_flag(m, "answer_model", required=True)
    _prediction_flag(m, "rationale_model", required=True)
    _task_flag(m, "bert_model_name", help="tokenizer: bert-base-uncased (ships with this package) or a vocab.txt / "
                                     "tokenizer directory")
    _task_flag(m, "cpu_kernels", help="on CPU, run the models on Paddle's stock layers instead of visualbert.cpu's")
    args = p.parse_args(argv)
    output = args.output or os.path.join("VCR", f"predictions_{args.split}.csv")
    return settings_from(p, TaskArguments, args), settings_from(p, PredictionArguments, args, output=output)

def default_prediction_output(parser, task, args):
    """Where predictions go without --output: into the training run's directory (the one holding the
    model/ or best/ predicted with), else beside the model; never into the current directory, which
    is often this source tree. A model given by name has no folder, so it needs --output."""
    split = os.path.splitext(os.path.basename(args.questions))[0] if getattr(args, "questions", None) else args.split
    name = f"result_{split}.json" if task == "vqa2" else f"predictions_{split}.csv"
    from .configuration import released_name

    path = args.model_name_or_path
    if os.path.isfile(path) and path.endswith(".json") or released_name(path) and not os.path.isdir(path):
        parser.error(f"--model_name_or_path {path} is not a model folder, so there is no folder beside it for the "
                     "predictions: pass --output")
    folder = os.path.dirname(path) if os.path.isfile(path) else path  # a missing folder is refused when loading
    parent = os.path.dirname(os.path.abspath(folder))
    if os.path.basename(os.path.normpath(folder)) in ("model", "best") and os.path.isfile(os.path.join(parent, "run_config.json")):
        folder = parent
    return os.path.join(folder, name)
