"""Every script's command line: the flag groups the scripts share, and each script's parser.

The scripts parse with ``parse_pretrain_args`` / ``parse_finetune_args`` / ``parse_predict_args`` and
hand the result to ``visualbert.tasks``; ``tools/cli_docs.py`` renders their --help into docs/cli.md.
"""
import argparse
import os

from .argtypes import fraction, int_range, non_negative_float, non_negative_int, positive_float, positive_int, seed_int
from .examples import DEFAULT_FEATURE_TYPE
from .features import FEATURE_TYPES
from .inference import add_engine_arg
from .tasks import PRETRAIN_SPLITS

# ---------------------------------------------------------------------------- shared groups

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
                   help="model family (kept for the original scripts; only visualbert)")
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


def add_data_args(parser, task):
    g = parser.add_argument_group("data")
    g.add_argument("--input_dir", default=None,
                   help="data root (X_COCO/ for vqa2, X_NLVR/ for nlvr2); needed unless --features names the features")
    g.add_argument("--annotation_dir", default=None,
                   help="annotation files (default: <input_dir>/annotations, then PaddleNLP's dataset home)")
    g.add_argument("--image_feature_type", default=DEFAULT_FEATURE_TYPE[task], choices=sorted(FEATURE_TYPES),
                   help=f"region features (default {DEFAULT_FEATURE_TYPE[task]})")
    g.add_argument("--max_seq_length", type=int_range(4), default=128,
                   help="longest token sequence, [CLS]/[SEP] included (at least 4)")
    add_feature_args(g)
    return g


def add_feature_args(group):
    group.add_argument("--features", default=None, metavar="DIR",
                       help="a packed feature store written by python -m visualbert.extract or python -m visualbert.features "
                            "import, used instead of --image_feature_type's files under --input_dir")
    group.add_argument("--max_regions", type=positive_int, default=None, help="keep at most this many regions per image")
    group.add_argument("--feature_dtype", default="float32", choices=["float32", "float16"],
                       help="dtype regions travel in from the loader workers; float16 halves the traffic "
                            "(the packed store is fp16 on disk anyway); the model computes in float32 or AMP")


def add_vqa_json_args(group, sets):
    """Flags for VQA data in the official JSON format: ``--<set>_questions`` / ``--<set>_annotations``
    for each of ``sets`` (plain ``--questions`` / ``--annotations`` for the empty name), ``--image_key``
    (and ``--<set>_image_key`` when there are two sets, whose images often lie in two folders) and
    ``--image_map``."""
    for name in sets:
        prefix = f"--{name}_" if name else "--"
        what = f"{name} set" if name else "questions to predict"
        group.add_argument(prefix + "questions", default=None, metavar="Q.json",
                           help=f"{what} in the official VQA questions format, any split name (instead of an imdb split)")
        group.add_argument(prefix + "annotations", default=None, metavar="A.json",
                           help=f"answers to {prefix}questions in the official VQA annotations format"
                                + ("" if name != "eval" else " (needed to score them)")
                                + (" (optional: prints the accuracy)" if not name else ""))
    group.add_argument("--image_key", default="{image_id}",
                       help="template from a question's image_id (an integer, or a string such as grace_hopper) to "
                            "its feature key in --features, e.g. COCO_val2014_{image_id:012d} or "
                            "val2014/COCO_val2014_{image_id:012d} (default: {image_id})")
    for name in sets if len(sets) > 1 else ():
        group.add_argument(f"--{name}_image_key", default=None,
                           help=f"the template for --{name}_questions only (default: --image_key), e.g. "
                                f"{'train2014/COCO_train2014' if name == 'train' else 'val2014/COCO_val2014'}"
                                "_{image_id:012d} for images extracted from COCO's folders")
    group.add_argument("--image_map", default=None, metavar="FILE.json",
                       help='a JSON object {"image_id": "feature key", ...} naming each image\'s key, instead of '
                            "the templates")


def add_predict_args(group, default_split, output_help):
    """Flags the two run_predict.py scripts share (after add_data_args)."""
    group.add_argument("--split", default=default_split, help="split to predict")
    group.add_argument("--output", default=None, help=output_help)
    group.add_argument("--batch_size", type=positive_int, default=64, help="samples per device")
    group.add_argument("--num_workers", type=non_negative_int, default=2,
                       help="DataLoader worker processes (0 = load in the main process)")
    group.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    group.add_argument("--use_amp", action="store_true", help="mixed precision inference (GPU only)")
    group.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"], help="AMP compute dtype")
    group.add_argument("--seed", type=seed_int, default=42, help=argparse.SUPPRESS)


# ---------------------------------------------------------------------------- the scripts' parsers


def _parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_pretrain_args(description, argv=None):
    """run_pretrain.py's command line; the splits and feature type default per --dataset."""
    p = _parser(description)
    g = p.add_argument_group("data")
    g.add_argument("--input_dir", default=None, help="data root (X_COCO/, X_NLVR/ or X_VCR/); annotations in <input_dir>/annotations "
                                                     "unless --annotation_dir; needed unless --features names the features")
    g.add_argument("--annotation_dir", default=None, help="where the annotation files are (default: <input_dir>/annotations, "
                                                          "then PaddleNLP's dataset home)")
    g.add_argument("--dataset", required=True, choices=sorted(PRETRAIN_SPLITS), help="pretraining corpus")
    g.add_argument("--image_feature_type", default=None, choices=sorted(FEATURE_TYPES),
                   help="region features (default: the original scripts' choice for --dataset)")
    g.add_argument("--train_split", default=None, help="annotation split to train on (default: train)")
    g.add_argument("--eval_split", default=None, help="split to evaluate on each epoch (default: val / minival / dev; "
                                                      "'none' to skip)")
    g.add_argument("--max_eval_samples", type=positive_int, default=5000, help="evaluate on at most this many examples")
    g.add_argument("--max_seq_length", type=int_range(4), default=128,
                   help="longest token sequence, [CLS]/[SEP] included (at least 4)")
    add_feature_args(g)
    g.add_argument("--image_dir", default=None,
                   help="vcr: the images and their metadata JSON (default: <input_dir>/vcr1images)")
    g.add_argument("--mask_prob", type=fraction, default=0.15,
                   help="share of text tokens chosen for masked LM, in [0, 1] (at least one per sentence)")
    g.add_argument("--no_nlvr2_label", action="store_true", help="nlvr2: train masked LM only, without the label")
    g.add_argument("--train_batch_size", type=positive_int, default=16, help="samples per device per micro-batch")
    g.add_argument("--eval_batch_size", type=positive_int, default=64, help="samples per device when evaluating")
    add_model_args(p, default_model="visualbert-vqa-coco-pre")
    add_training_args(p, learning_rate=1e-5, num_train_epochs=3)
    args = check_training_args(p, p.parse_args(argv))
    train_split, eval_split = PRETRAIN_SPLITS[args.dataset]
    args.train_split = args.train_split or train_split
    args.eval_split = None if args.eval_split == "none" else (args.eval_split or eval_split)
    # VCR has no feature files: its model encodes the images itself
    args.image_feature_type = args.image_feature_type or DEFAULT_FEATURE_TYPE.get(args.dataset)
    return args


def parse_finetune_args(task, description, argv=None):
    """run_vqa2.py's / run_nlvr2.py's command line (``task``: vqa2 or nlvr2)."""
    p = _parser(description)
    g = add_data_args(p, task)
    g.add_argument("--task_name", default=task, choices=[task], help="task (kept for the original scripts)")
    g.add_argument("--train_split", default="train", help="imdb split to train on: train, trainval, val, ..."
                   if task == "vqa2" else "split to train on")
    if task == "vqa2":
        g.add_argument("--eval_split", default="val", help="imdb split scored each epoch (minival with --train_split trainval); "
                                                          "its questions are removed from training; 'none' to skip")
        add_vqa_json_args(g, ("train", "eval"))
        g.add_argument("--answer_vocab", default=None,
                       help="answer vocabulary file, or build[:K]: <unk> then the K most frequent training answers (all "
                            "without K); saved as <output_dir>/answer_vocab.txt, which run_predict.py reuses "
                            "(default: the shipped answers_vqa.txt)")
        g.add_argument("--batch_size", type=positive_int, default=64, help="samples per device, training and evaluation")
        g.add_argument("--loss", default="kl", choices=["kl", "bce"],
                       help="kl: KL-divergence to the soft scores (transformers); bce: binary cross-entropy (MMF)")
        add_model_args(p, default_model="visualbert-vqa-pre")
        add_training_args(p, learning_rate=2e-5, num_train_epochs=10, save_steps=10000)
    else:
        g.add_argument("--eval_split", default="dev", help="split scored each epoch ('none' to skip)")
        g.add_argument("--batch_size", type=positive_int, default=16, help="samples per device, training and evaluation")
        add_model_args(p, default_model="visualbert-nlvr2-pre")
        add_training_args(p, learning_rate=2e-5, num_train_epochs=10, save_steps=5000)
    args = check_training_args(p, p.parse_args(argv))
    args.train_batch_size = args.batch_size  # the original scripts say --batch_size; the engine counts per-device batches
    args.eval_split = None if args.eval_split == "none" else args.eval_split
    return args


def parse_predict_args(task, description, argv=None):
    """VQA2/run_predict.py's / NLVR2/run_predict.py's command line (``task``: vqa2 or nlvr2)."""
    p = _parser(description)
    g = add_data_args(p, task)
    if task == "vqa2":
        add_predict_args(g, "test", "result file to write (default: result_<split>.json in the training run's "
                                    "directory, the one holding the model/ or best/ predicted with, else beside the model; "
                                    "<split> is the --questions file's name when given)")
        add_vqa_json_args(g, ("",))
        g.add_argument("--answer_vocab", default=None,
                       help="answer vocabulary file (default: the training run's answer_vocab.txt beside the model or in "
                            "its parent directory, else the shipped answers_vqa.txt)")
        add_model_args(p, default_model="logs/vqa")
    else:
        add_predict_args(g, "test1", "predictions CSV (default: predictions_<split>.csv in the training run's "
                                     "directory, the one holding the model/ or best/ predicted with, else beside the model)")
        add_model_args(p, default_model="logs/nlvr2")
    add_engine_arg(p)
    args = p.parse_args(argv)
    if not args.output:
        args.output = default_prediction_output(p, task, args)
    return args


def _flickr30k_data_args(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--input_dir", default=None,
                   help="data root (X_FLICKR/); the annotations are then in <input_dir>/Flickr30kEntities")
    g.add_argument("--annotation_dir", default=None,
                   help="the Flickr30K Entities release: Sentences/, Annotations/, train.txt / val.txt / test.txt "
                        "(default: <input_dir>/Flickr30kEntities)")
    g.add_argument("--image_key", default="{image_id}",
                   help="template from an image id (the name in Sentences/) to its key in --features (default: {image_id})")
    g.add_argument("--max_seq_length", type=int_range(4), default=128,
                   help="longest token sequence, [CLS]/[SEP] included (at least 4)")
    add_feature_args(g)
    return g


def parse_flickr30k_args(description, argv=None):
    """Flickr30K/run_flickr30k.py's command line; defaults are the original fine-tuning config's."""
    p = _parser(description)
    g = _flickr30k_data_args(p)
    g.add_argument("--train_split", default="train", help="image list to train on: train, val, test or a file")
    g.add_argument("--eval_split", default="val", help="image list scored each epoch ('none' to skip)")
    g.add_argument("--batch_size", type=positive_int, default=32, help="captions per device, training and evaluation")
    add_model_args(p, default_model="visualbert-vqa-coco-pre")
    add_training_args(p, learning_rate=2e-5, num_train_epochs=5, save_steps=5000)
    args = check_training_args(p, p.parse_args(argv))
    args.train_batch_size = args.batch_size
    args.eval_split = None if args.eval_split == "none" else args.eval_split
    return args


def parse_flickr30k_predict_args(description, argv=None):
    """Flickr30K/run_predict.py's command line."""
    p = _parser(description)
    g = _flickr30k_data_args(p)
    add_predict_args(g, "test", "ranked boxes per phrase, JSON (default: predictions_<split>.json in the model's "
                                "run directory)")
    add_model_args(p, default_model="logs/flickr30k")
    args = p.parse_args(argv)
    if not args.output:
        model = os.path.normpath(args.model_name_or_path)
        run = os.path.dirname(model) if os.path.basename(model) in ("best", "model") else model
        args.output = os.path.join(run if os.path.isdir(run) else ".", f"predictions_{os.path.basename(args.split)}.json")
    return args


# ---------------------------------------------------------------------------- VCR


def add_vcr_data_args(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--input_dir", default="X_VCR",
                   help="VCR root: {train,val,test}.jsonl and vcr1images/ (default X_VCR, as the original configs)")
    g.add_argument("--annotation_dir", default=None, help="where the .jsonl files are (default: --input_dir)")
    g.add_argument("--image_dir", default=None,
                   help="the images and their metadata JSON, as img_fn / metadata_fn name them "
                        "(default: <input_dir>/vcr1images)")
    g.add_argument("--max_seq_length", type=int_range(4), default=128,
                   help="longest token sequence, [CLS]/[SEP] included (at least 4)")
    g.add_argument("--batch_size", type=positive_int, default=8,
                   help="questions per device (each with its four choices), training and evaluation")
    return g


def parse_vcr_args(description, argv=None):
    """VCR/run_vcr.py's command line."""
    p = _parser(description)
    g = add_vcr_data_args(p)
    g.add_argument("--mode", required=True, choices=["answer", "rationale"],
                   help="answer: Q->A (the question with each answer); rationale: QA->R (the question and the "
                        "right answer with each rationale)")
    g.add_argument("--train_split", default="train", help="split to train on")
    g.add_argument("--eval_split", default="val", help="split scored each epoch ('none' to skip)")
    g.add_argument("--class_loss_ratio", type=non_negative_float, default=None,
                   help="weight of the image encoder's 81-way box-class loss (default: the model config's; "
                        "0 as the original)")
    add_model_args(p, default_model="visualbert-vcr-pre")
    add_training_args(p, learning_rate=2e-5, num_train_epochs=8, save_steps=5000)
    args = check_training_args(p, p.parse_args(argv))
    args.train_batch_size = args.batch_size
    args.eval_split = None if args.eval_split == "none" else args.eval_split
    return args


def parse_vcr_predict_args(description, argv=None):
    """VCR/run_predict.py's command line."""
    p = _parser(description)
    g = add_vcr_data_args(p)
    g.add_argument("--split", default="test", help="split to predict (test, or val to score it too)")
    g.add_argument("--output", default=None, help="leaderboard CSV to write (default: VCR/predictions_<split>.csv)")
    g.add_argument("--num_workers", type=non_negative_int, default=2,
                   help="DataLoader worker processes (0 = load in the main process)")
    g.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    g.add_argument("--use_amp", action="store_true", help="mixed precision inference (GPU only)")
    g.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"], help="AMP compute dtype")
    g.add_argument("--seed", type=seed_int, default=42, help=argparse.SUPPRESS)
    m = p.add_argument_group("models")
    m.add_argument("--answer_model", required=True, help="a run (or model dir) fine-tuned with --mode answer")
    m.add_argument("--rationale_model", required=True, help="a run (or model dir) fine-tuned with --mode rationale")
    m.add_argument("--bert_model_name", default="bert-base-uncased",
                   help="tokenizer: bert-base-uncased (ships with this package) or a vocab.txt / tokenizer directory")
    m.add_argument("--no_cpu_kernels", dest="cpu_kernels", action="store_false",
                   help="on CPU, run the models on Paddle's stock layers instead of visualbert.cpu's")
    args = p.parse_args(argv)
    args.output = args.output or os.path.join("VCR", f"predictions_{args.split}.csv")
    return args

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
