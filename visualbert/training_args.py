"""The settings of a training run, as typed objects: what the scripts' flags become, and what a user
builds to train from Python without a command line.

``TrainingArguments`` holds the training loop's settings (``engine.train`` reads only these);
``TaskArguments`` holds where the data and the model are and how examples are made, for every task
(a task reads the fields it needs). Each field carries its default and its one-line help, from which
``visualbert.cli`` builds the scripts' flags, so a name, a default or a help text is written once.

    from visualbert import TaskArguments, TrainingArguments, tasks

    tasks.finetune("nlvr2", TaskArguments(input_dir="X_NLVR", model_name_or_path="visualbert-nlvr2-pre"),
                   TrainingArguments(output_dir="logs/nlvr2", train_batch_size=16, num_train_epochs=10))

A value out of range is refused when the object is made, with the line the flag's check gives.
"""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .argtypes import fraction, int_range, non_negative_float, non_negative_int, positive_float, positive_int, seed_int


def setting(default=dataclasses.MISSING, help="", **flag):
    """A field with its default, its help line and how its flag parses (``type``, ``choices``,
    ``metavar``, ``flag`` for a flag named otherwise than the field)."""
    return field(default=default, metadata={"help": help, **flag})


def check_values(settings):
    """Check each field's value as its flag does (its ``type`` check, its ``choices``); ValueError names the field."""
    for f in dataclasses.fields(settings):
        value, check, choices = getattr(settings, f.name), f.metadata.get("type"), f.metadata.get("choices")
        if value is None:
            continue
        if choices is not None and value not in choices:
            expected = ", ".join(map(str, choices[:-1])) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
            raise ValueError(f"{f.name}: expected {expected}, got {value!r}")
        try:
            if check is not None:
                check(value)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{f.name}: {e}") from None


@dataclass
class TrainingArguments:
    """How a model is trained: the loop's length, optimiser, schedule, precision, checkpoints and logs."""

    output_dir: str = setting(help="where checkpoints, metrics.jsonl and the final model go")
    num_train_epochs: float = setting(3, "epochs to train (ignored when --max_steps > 0)", type=non_negative_float)
    max_steps: int = setting(-1, "optimizer steps to train; overrides --num_train_epochs when > 0", type=int)
    learning_rate: float = setting(2e-5, "peak learning rate", type=positive_float)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on bias and LayerNorm)", type=non_negative_float)
    adam_epsilon: float = setting(1e-6, "AdamW epsilon", type=positive_float)
    warmup_proportion: float = setting(0.1, "share of optimizer steps spent warming up linearly, in [0, 1]",
                                       type=fraction)
    warmup_steps: int = setting(0, "warmup length in optimizer steps; overrides --warmup_proportion",
                                type=non_negative_int)
    max_grad_norm: float = setting(1.0, "global-norm gradient clipping (0 = off)", type=non_negative_float)
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step", type=positive_int)
    logging_steps: int = setting(20, "write a metrics.jsonl line every N optimizer steps (and a progress line when "
                                     "the output is not a terminal)", type=positive_int)
    save_steps: int = setting(1000, "write a checkpoint every N optimizer steps (and always at the end)",
                              type=positive_int)
    save_total_limit: int = setting(3, "keep only the newest K checkpoints (default 3; 0 = keep all)",
                                    type=non_negative_int)
    eval_steps: int = setting(0, "evaluate every N optimizer steps (0 = once per epoch)", type=non_negative_int)
    seed: int = setting(42, "seed for initialisation, shuffling, masking and dropout", type=seed_int)
    device: str = setting("auto", "auto = gpu when available", choices=["auto", "gpu", "cpu"])
    use_amp: bool = setting(False, "mixed precision (GPU only; ignored with a note on CPU)")
    amp_dtype: str = setting("float16", "AMP compute dtype; float16 uses dynamic loss scaling",
                             choices=["float16", "bfloat16"])
    num_workers: int = setting(2, "DataLoader worker processes (0 = load in the training process)",
                               type=non_negative_int)
    resume: Optional[str] = setting(None, "continue from a checkpoint dir, or the newest complete one in --output_dir "
                                          "(the training settings must match the saved run_config.json)",
                                    metavar="DIR|latest")
    overwrite_output_dir: bool = setting(False, "delete the training run already in --output_dir (checkpoints, "
                                                "metrics, models) and start over; without it (or --resume) such a "
                                                "directory is refused")
    allow_changed_settings: bool = setting(False, "with --resume: continue although training settings (batch size, "
                                                  "learning rate, steps, data, world size, ...) differ from the saved "
                                                  "ones; run_config.json records the changes, and the run no longer "
                                                  "matches an uninterrupted one")
    visualdl: bool = setting(False, "also log scalars to VisualDL in <output_dir>/visualdl")
    # the scripts show these two among their data flags (the fine-tuning ones as one --batch_size)
    train_batch_size: int = setting(16, "samples per device per micro-batch", type=positive_int)
    eval_batch_size: int = setting(64, "samples per device when evaluating", type=positive_int)

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("output_dir: where checkpoints, metrics.jsonl and the final model go, is needed")
        check_values(self)
        if self.max_steps <= 0 and self.num_train_epochs == 0:
            raise ValueError("--num_train_epochs must be > 0 unless --max_steps > 0 sets the length")

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclass
class TaskArguments:
    """Where a task's data and model are and how its examples are made. One set of fields for every
    task: each task reads those it needs (the scripts' --help says which flags each one has)."""

    # data
    input_dir: Optional[str] = setting(None, "data root (X_COCO/, X_NLVR/, X_FLICKR/ or X_VCR/)")
    annotation_dir: Optional[str] = setting(None, "annotation files (default: <input_dir>/annotations, then "
                                                  "PaddleNLP's dataset home)")
    image_dir: Optional[str] = setting(None, "vcr: the images and their metadata JSON (default: "
                                             "<input_dir>/vcr1images)")
    image_feature_type: Optional[str] = setting(None, "region features (default: the task's)")
    features: Optional[str] = setting(None, "a packed feature store written by python -m visualbert.extract or "
                                            "python -m visualbert.features import, used instead of "
                                            "--image_feature_type's files under --input_dir", metavar="DIR")
    max_regions: Optional[int] = setting(None, "keep at most this many regions per image", type=positive_int)
    feature_dtype: str = setting("float32", "dtype regions travel in from the loader workers; float16 halves the "
                                            "traffic (the packed store is fp16 on disk anyway); the model computes "
                                            "in float32 or AMP", choices=["float32", "float16"])
    max_seq_length: int = setting(128, "longest token sequence, [CLS]/[SEP] included (at least 4)",
                                  type=int_range(4))
    train_split: str = setting("train", "split to train on")
    eval_split: Optional[str] = setting(None, "split scored each epoch (None: no evaluation)")
    # pretraining
    dataset: Optional[str] = setting(None, "pretraining corpus")
    max_eval_samples: int = setting(5000, "evaluate on at most this many examples", type=positive_int)
    mask_prob: float = setting(0.15, "share of text tokens chosen for masked LM, in [0, 1] (at least one per "
                                     "sentence)", type=fraction)
    no_nlvr2_label: bool = setting(False, "nlvr2: train masked LM only, without the label")
    # VQA2 in the official JSON format, and its answers
    train_questions: Optional[str] = setting(None, "train set in the official VQA questions format",
                                             metavar="Q.json")
    train_annotations: Optional[str] = setting(None, "answers to --train_questions", metavar="A.json")
    eval_questions: Optional[str] = setting(None, "eval set in the official VQA questions format", metavar="Q.json")
    eval_annotations: Optional[str] = setting(None, "answers to --eval_questions", metavar="A.json")
    questions: Optional[str] = setting(None, "questions to predict in the official VQA questions format",
                                       metavar="Q.json")
    annotations: Optional[str] = setting(None, "answers to --questions (optional: prints the accuracy)",
                                         metavar="A.json")
    image_key: str = setting("{image_id}", "template from an image id to its feature key in --features "
                                           "(default: {image_id})")
    train_image_key: Optional[str] = setting(None, "the template for --train_questions only (default: --image_key)")
    eval_image_key: Optional[str] = setting(None, "the template for --eval_questions only (default: --image_key)")
    image_map: Optional[str] = setting(None, 'a JSON object {"image_id": "feature key", ...} naming each image\'s '
                                             "key, instead of the templates", metavar="FILE.json")
    answer_vocab: Optional[str] = setting(None, "answer vocabulary file, or build[:K] (default: the shipped "
                                                "answers_vqa.txt)")
    loss: str = setting("kl", "kl: KL-divergence to the soft scores (transformers); bce: binary cross-entropy "
                              "(MMF)", choices=["kl", "bce"])
    # VCR
    mode: Optional[str] = setting(None, "answer: Q->A (the question with each answer); rationale: QA->R (the "
                                        "question and the right answer with each rationale)",
                                  choices=["answer", "rationale"])
    class_loss_ratio: Optional[float] = setting(None, "weight of the image encoder's 81-way box-class loss "
                                                      "(default: the model config's; 0 as the original)",
                                                type=non_negative_float)
    # model
    task_name: Optional[str] = setting(None, "task (kept for the original scripts)")
    model_type: str = setting("visualbert", "model family (kept for the original scripts; only visualbert)",
                              choices=["visualbert"])
    model_name_or_path: Optional[str] = setting(
        None, "a released name (visualbert-vqa-pre, ...; converted weights must be in PaddleNLP's model home), a "
              "directory written by save_pretrained / visualbert.convert / a training run (its model/ is used), a "
              ".pdparams file inside such a directory, or a config .json to train from scratch")
    bert_model_name: str = setting("bert-base-uncased", "tokenizer: bert-base-uncased (the vocabulary ships with this "
                                                        "package) or a vocab.txt / tokenizer directory")
    cpu_kernels: bool = setting(True, "on CPU, run the model on Paddle's stock layers instead of visualbert.cpu's "
                                      "faster ones (same results; for comparison or if a oneDNN kernel fails)",
                                flag="--no_cpu_kernels")

    def __post_init__(self):
        check_values(self)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclass
class PredictionArguments:
    """How the run_predict.py scripts predict: which split, into which file, on what."""

    split: str = setting("test", "split to predict")
    output: Optional[str] = setting(None, "file to write")
    batch_size: int = setting(64, "samples per device", type=positive_int)
    num_workers: int = setting(2, "DataLoader worker processes (0 = load in the main process)", type=non_negative_int)
    device: str = setting("auto", "auto = gpu when available", choices=["auto", "gpu", "cpu"])
    use_amp: bool = setting(False, "mixed precision inference (GPU only)")
    amp_dtype: str = setting("float16", "AMP compute dtype", choices=["float16", "bfloat16"])
    seed: int = setting(42, argparse.SUPPRESS, type=seed_int)
    engine: Optional[str] = setting(None, "dygraph, paddle_inference or onnxruntime (default: the device's)")
    # VCR: the two models whose scores the leaderboard file combines
    answer_model: Optional[str] = setting(None, "a run (or model dir) fine-tuned with --mode answer")
    rationale_model: Optional[str] = setting(None, "a run (or model dir) fine-tuned with --mode rationale")

    def __post_init__(self):
        check_values(self)
