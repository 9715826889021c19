"""Examples -> model inputs (numpy, one dict per example) and the batch collator.

Per-example dict (names are HF VisualBERT's ``forward`` arguments):

- ``input_ids``, ``token_type_ids``, ``attention_mask``: int64 [T]
- ``visual_embeds``: float32 [V, D]; ``visual_token_type_ids``, ``visual_attention_mask``: int64 [V]
- targets: MLM ``labels`` int64 [T] (-100 where not masked; text positions only),
  ``sentence_image_labels`` int64 scalar (caption matching 1 = match; NLVR2 pretraining: its label),
  VQA ``labels`` float32 [num_answers] (official soft scores), NLVR2 ``labels`` int64 scalar (True = 1)
- metadata, not model inputs: ``question_id`` (int), ``image_id`` (int, or str for own images), ``identifier`` (str)

Inputs are built as the original code trained:

- :class:`VQADataset`: ``[CLS] question ? [MASK] [SEP]``, all types 0.
- :class:`NLVR2Dataset`: ``[CLS] sentence [SEP]``; left regions (type 0) then right (type 1).
- :class:`CaptionPretrainDataset`: ``[CLS] a [SEP] b [SEP]`` (types 0 / 1); b is another caption of
  the same image (label 1) or, with p = 0.5, a caption of another image (label 0); MLM.
- :class:`VQAPretrainDataset`: MLM on ``[CLS] question ? answer [SEP]`` (answer = the most
  frequent human answer). :class:`NLVR2PretrainDataset`: MLM on the NLVR2 input + its label.

MLM: each non-special text token is chosen with ``mask_prob`` (at least one per example, so no
batch is without a loss term); chosen tokens become ``[MASK]`` 80%, a random vocab id 10%, stay
10%. Every random choice of an item is a pure function of ``(seed, epoch, index)`` (call
``set_epoch`` each epoch), so resumed and data-parallel runs see exactly the same data. Text is
tokenised once, when a dataset is built. Features are read in ``__getitem__`` so DataLoader
workers do the I/O.

``spatial=True`` (every dataset; the model config's ``add_spatial_features``) appends each region's box
geometry from the feature store (normalised x1, y1, x2, y2, w, h) to its features, as the original
Flickr30K code did, so ``visual_embeds`` is [V, D + 6] and the model sees where each region is.

``visual_dtype="float16"`` (every dataset) hands a packed fp16 store's rows through unconverted:
half the bytes cross from DataLoader workers to the trainer, which then casts ``visual_embeds`` to
float32 on the device. That is what lets 2 workers feed 100 x 2048 regions fast enough
(BENCHMARKS.md); the default float32 keeps the contract above.
"""
import collections

import numpy as np
import paddle

from .examples import describe_example, example_image_keys
from .formats.vqa import read_answer_vocab

__all__ = ["TEXT_KEYS", "REGION_KEYS", "get_tokenizer", "Collator", "VQADataset", "NLVR2Dataset",
           "CaptionPretrainDataset", "VQAPretrainDataset", "NLVR2PretrainDataset", "vqa_targets", "mask_tokens"]

TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
REGION_KEYS = ("visual_embeds", "visual_token_type_ids", "visual_attention_mask")

IGNORE_INDEX = -100


def get_tokenizer(vocab_file=None):
    """paddlenlp ``BertTokenizer`` over the shipped bert-base-uncased vocab (lowercasing)."""
    from paddlenlp.transformers import BertTokenizer

    from . import VOCAB_FILE

    return BertTokenizer(vocab_file or VOCAB_FILE, do_lower_case=True)


class _TextIds:
    """Tokenises each distinct string once; NLVR2 repeats every sentence about four times."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache = {}
        self.cls = tokenizer.convert_tokens_to_ids("[CLS]")
        self.sep = tokenizer.convert_tokens_to_ids("[SEP]")
        self.mask = tokenizer.convert_tokens_to_ids("[MASK]")
        self.vocab_size = len(tokenizer.vocab)

    def __call__(self, text):
        ids = self.cache.get(text)
        if ids is None:
            ids = np.asarray(self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text)), dtype=np.int64)
            self.cache[text] = ids
        return ids


def mask_tokens(input_ids, candidates, rng, mask_id, vocab_size, mask_prob=0.15):
    """BERT masking of ``input_ids`` at ``candidates`` (bool); returns (masked ids, labels with -100)."""
    ids = input_ids.copy()
    labels = np.full_like(ids, IGNORE_INDEX)
    positions = np.flatnonzero(candidates)
    if positions.size == 0:
        return ids, labels
    chosen = positions[rng.random(positions.size) < mask_prob]
    if chosen.size == 0:
        chosen = positions[rng.integers(positions.size, size=1)]
    labels[chosen] = ids[chosen]
    action = rng.random(chosen.size)
    ids[chosen[action < 0.8]] = mask_id
    random_pos = chosen[(action >= 0.8) & (action < 0.9)]
    ids[random_pos] = rng.integers(0, vocab_size, size=random_pos.size)
    return ids, labels


def vqa_targets(answers, answer_index):
    """Sparse soft targets: (vocab ids, official scores) of the vocab answers among ``answers``.

    Each human answer is fully normalised (``normalize_vqa_answer``); a vocab answer given by k of
    the n humans scores ``vqa_soft_score(k, n)``. Answers outside the vocabulary score nothing.
    The official metric skips normalisation when all humans agree, but the vocabulary holds only
    normalised answers, so normalising always points such a question at its nearest vocab answer
    instead of leaving it with no target.
    """
    from .metrics import normalize_vqa_answer, vqa_soft_score

    counts = collections.Counter(normalize_vqa_answer(a) for a in answers)
    ids, scores = [], []
    for answer, k in counts.items():
        j = answer_index.get(answer)
        if j is not None and j != 0:
            ids.append(j)
            scores.append(vqa_soft_score(k, len(answers)))
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


class Collator:
    """Pads a list of example dicts into one batch dict of numpy arrays (strings stay lists).

    Text keys pad to the batch's longest text (ids/types/mask with 0), region keys to its most
    regions (``visual_embeds`` 0.0, masks/types 0); ``labels`` is padded as text with -100 only when
    ``text_labels`` is true (MLM) and stacked as is otherwise (VQA soft scores, class ids). Other
    numeric values are stacked, anything else (str, None) is returned as a list.
    """

    def __init__(self, text_labels=False):
        self.text_labels = bool(text_labels)

    def __call__(self, samples):
        if not samples:
            raise ValueError("Collator got an empty batch")
        keys = list(samples[0])
        for s in samples[1:]:
            if list(s) != keys:
                raise ValueError(f"Collator: examples in one batch have different keys ({keys} vs {list(s)})")
        batch = {}
        for k in keys:
            values = [s[k] for s in samples]
            if k in TEXT_KEYS or (k == "labels" and self.text_labels):
                batch[k] = _pad([np.asarray(v, dtype=np.int64) for v in values], IGNORE_INDEX if k == "labels" else 0)
            elif k in REGION_KEYS:
                # visual_embeds keep the dataset's dtype: float32, or float16 with visual_dtype="float16"
                dtype = values[0].dtype if k == "visual_embeds" else np.int64
                batch[k] = _pad([np.asarray(v, dtype=dtype) for v in values], 0)
            elif all(isinstance(v, (np.ndarray, np.generic, int, float, bool)) and not isinstance(v, str) for v in values):
                batch[k] = np.stack([np.asarray(v) for v in values])
            else:
                batch[k] = values
        return batch


def _pad(arrays, value):
    longest = max(a.shape[0] for a in arrays)
    # Only the padding tail is filled: a region batch is tens of MB, and writing it twice shows.
    out = np.empty((len(arrays), longest) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
        out[i, a.shape[0]:] = value
    return out


class ExampleError(ValueError):
    """An example's inputs could not be read; the message names the file and the example."""


class _VisualTextDataset(paddle.io.Dataset):
    """Shared parts: epoch, features, tokenisation, visual inputs."""

    text_labels = False

    def __init__(self, examples, tokenizer, features, max_seq_length=128, seed=0, visual_dtype="float32", spatial=False):
        super().__init__()
        self.spatial = bool(spatial)
        if self.spatial and not features.has_boxes:
            raise ValueError(f"{features.where()}: the model takes each region's box geometry (add_spatial_features), "
                             "but these features keep none; use a store written by visualbert.extract or "
                             "`features import` of boxed features")
        self.visual_dtype = np.dtype(visual_dtype)
        if self.visual_dtype not in (np.dtype("float32"), np.dtype("float16")):
            raise ValueError(f"visual_dtype must be float32 or float16, got {visual_dtype}")
        self.examples = list(examples)
        if not self.examples:
            raise ValueError(f"{type(self).__name__}: no examples")
        if max_seq_length < 4:
            raise ValueError(f"max_seq_length must be >= 4, got {max_seq_length}")
        self.features = features
        self.max_seq_length = int(max_seq_length)
        self.seed = int(seed)
        self.epoch = 0
        self.text = _TextIds(tokenizer)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.examples)

    def collate_fn(self):
        return Collator(text_labels=self.text_labels)

    def _rng(self, index):
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _visual(self, example):
        try:
            parts = [self._regions(k) for k in example_image_keys(example)]
        except (OSError, ValueError) as e:  # the store's message names the file; add who needs it
            raise ExampleError(f"{e} (needed by {describe_example(example)})") from None
        embeds = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        types = np.concatenate([np.full(p.shape[0], t, dtype=np.int64) for t, p in enumerate(parts)])
        return {"visual_embeds": embeds, "visual_token_type_ids": types,
                "visual_attention_mask": np.ones(embeds.shape[0], dtype=np.int64)}

    def _regions(self, key):
        rows = self.features.get(key, dtype=self.visual_dtype)
        if self.spatial:
            rows = np.concatenate([rows, self.features.boxes(key).astype(rows.dtype)], axis=1)
        return rows

    def _single(self, ids, tail=()):
        """``[CLS] ids tail [SEP]`` truncated to max_seq_length, types 0."""
        tail = np.asarray(tail, dtype=np.int64)
        ids = ids[: self.max_seq_length - 2 - tail.size]
        input_ids = np.concatenate([[self.text.cls], ids, tail, [self.text.sep]]).astype(np.int64)
        return {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids),
                "attention_mask": np.ones_like(input_ids)}

    def _mlm(self, item, rng, mask_prob):
        ids = item["input_ids"]
        candidates = (ids != self.text.cls) & (ids != self.text.sep)
        item["input_ids"], item["labels"] = mask_tokens(ids, candidates, rng, self.text.mask, self.text.vocab_size, mask_prob)
        return item


class VQADataset(_VisualTextDataset):
    """VQA2 fine-tuning/prediction. ``labels``: float32 [len(answer_vocab)] soft scores (absent on test)."""

    def __init__(self, examples, tokenizer, features, answer_vocab=None, max_seq_length=128, visual_dtype="float32",
                 spatial=False):
        super().__init__(examples, tokenizer, features, max_seq_length, visual_dtype=visual_dtype, spatial=spatial)
        self.answer_vocab = list(answer_vocab) if answer_vocab is not None else read_answer_vocab()
        index = {a: i for i, a in enumerate(self.answer_vocab)}
        self.question = [_question_text(self.text, ex["question_str"]) for ex in self.examples]
        self.qmark = self.text("?")
        self.targets = [None if ex.get("answers") is None else vqa_targets(ex["answers"], index) for ex in self.examples]

    def __getitem__(self, i):
        ex = self.examples[i]
        item = self._single(self.question[i], np.concatenate([self.qmark, [self.text.mask]]))
        item.update(self._visual(ex))
        if self.targets[i] is not None:
            labels = np.zeros(len(self.answer_vocab), dtype=np.float32)
            ids, scores = self.targets[i]
            labels[ids] = scores
            item["labels"] = labels
        item["question_id"] = np.int64(ex["question_id"])
        # own photos may be named by string ids ("grace_hopper"); the collator hands strings on as a list
        item["image_id"] = ex["image_id"] if isinstance(ex["image_id"], str) else np.int64(ex["image_id"])
        return item


def _question_text(text_ids, question):
    # imdb questions end with "?"; the input adds its own "?" before [MASK].
    return text_ids(question.strip().rstrip("?").strip())


class NLVR2Dataset(_VisualTextDataset):
    """NLVR2 fine-tuning/prediction. ``labels``: int64 scalar, True = 1 (absent when unlabelled)."""

    def __init__(self, examples, tokenizer, features, max_seq_length=128, visual_dtype="float32", spatial=False):
        super().__init__(examples, tokenizer, features, max_seq_length, visual_dtype=visual_dtype, spatial=spatial)
        self.sentence = [self.text(ex["sentence"]) for ex in self.examples]

    def __getitem__(self, i):
        ex = self.examples[i]
        item = self._single(self.sentence[i])
        item.update(self._visual(ex))
        if ex.get("label") is not None:
            item["labels"] = np.int64(ex["label"])
        item["identifier"] = ex["identifier"]
        return item


class NLVR2PretrainDataset(NLVR2Dataset):
    """MLM on the NLVR2 input; the NLVR2 label goes to ``sentence_image_labels``."""

    text_labels = True

    def __init__(self, examples, tokenizer, features, max_seq_length=128, mask_prob=0.15, seed=0, visual_dtype="float32",
                 spatial=False):
        super().__init__(examples, tokenizer, features, max_seq_length, visual_dtype=visual_dtype, spatial=spatial)
        missing = [ex["identifier"] for ex in self.examples if ex.get("label") is None]
        if missing:
            raise ValueError(f"NLVR2PretrainDataset: example {missing[0]} has no label ({len(missing)} unlabelled)")
        self.seed = int(seed)
        self.mask_prob = float(mask_prob)

    def __getitem__(self, i):
        ex = self.examples[i]
        item = self._mlm(self._single(self.sentence[i]), self._rng(i), self.mask_prob)
        item.update(self._visual(ex))
        item["sentence_image_labels"] = np.int64(ex["label"])
        item["identifier"] = ex["identifier"]
        return item


class VQAPretrainDataset(_VisualTextDataset):
    """MLM on ``[CLS] question ? answer [SEP]`` (the most frequent human answer; none on test)."""

    text_labels = True

    def __init__(self, examples, tokenizer, features, max_seq_length=128, mask_prob=0.15, seed=0, visual_dtype="float32",
                 spatial=False):
        super().__init__(examples, tokenizer, features, max_seq_length, seed, visual_dtype, spatial)
        self.mask_prob = float(mask_prob)
        qmark = self.text("?")
        self.text_ids = []
        for ex in self.examples:
            tail = qmark
            if ex.get("answers"):
                answer = collections.Counter(ex["answers"]).most_common(1)[0][0]
                tail = np.concatenate([qmark, self.text(answer)])
            self.text_ids.append((_question_text(self.text, ex["question_str"]), tail))

    def __getitem__(self, i):
        ex = self.examples[i]
        question, tail = self.text_ids[i]
        tail = tail[: self.max_seq_length - 3]
        item = self._mlm(self._single(question, tail), self._rng(i), self.mask_prob)
        item.update(self._visual(ex))
        item["question_id"] = np.int64(ex["question_id"])
        return item


class CaptionPretrainDataset(_VisualTextDataset):
    """COCO caption pretraining: one item per caption; MLM + ``sentence_image_labels`` (1 = b matches).

    The second caption is re-drawn every epoch from ``(seed, epoch, index)``. An image with a
    single caption pairs it with itself when drawn positive.
    """

    text_labels = True

    def __init__(self, examples, tokenizer, features, max_seq_length=128, mask_prob=0.15, seed=0, visual_dtype="float32",
                 spatial=False):
        super().__init__(examples, tokenizer, features, max_seq_length, seed, visual_dtype, spatial)
        self.mask_prob = float(mask_prob)
        self.caption = [self.text(ex["caption"]) for ex in self.examples]
        by_image = collections.defaultdict(list)
        for i, ex in enumerate(self.examples):
            by_image[ex["image_key"]].append(i)
        if len(by_image) < 2:
            raise ValueError("CaptionPretrainDataset: captions of at least two images are needed to draw mismatched pairs")
        self.by_image = dict(by_image)
        self.image_of = [ex["image_key"] for ex in self.examples]

    def _second(self, i, rng):
        if rng.random() < 0.5:
            while True:
                j = int(rng.integers(len(self.examples)))
                if self.image_of[j] != self.image_of[i]:
                    return j, 0
        same = [j for j in self.by_image[self.image_of[i]] if j != i] or [i]
        return same[int(rng.integers(len(same)))], 1

    def __getitem__(self, i):
        rng = self._rng(i)
        j, label = self._second(i, rng)
        a, b = self.caption[i], self.caption[j]
        budget = self.max_seq_length - 3
        while a.size + b.size > budget:
            if a.size >= b.size:
                a = a[:-1]
            else:
                b = b[:-1]
        t = self.text
        input_ids = np.concatenate([[t.cls], a, [t.sep], b, [t.sep]]).astype(np.int64)
        types = np.concatenate([np.zeros(a.size + 2, np.int64), np.ones(b.size + 1, np.int64)])
        item = {"input_ids": input_ids, "token_type_ids": types, "attention_mask": np.ones_like(input_ids)}
        item = self._mlm(item, rng, self.mask_prob)
        item.update(self._visual(self.examples[i]))
        item["sentence_image_labels"] = np.int64(label)
        item["image_id"] = np.int64(self.examples[i]["image_id"])
        return item
