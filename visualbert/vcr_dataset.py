"""VCR items -> model-ready numpy dicts, and their collator (the rules are in ``vcr_inputs``).

:class:`VCRDataset` (fine-tuning, prediction): one sample per item, the four choices on a leading
axis. :class:`VCRPretrainDataset` (masked LM, as ``visualbert-vcr-pre``): eight samples per item,
the question with each answer and the question plus the right answer with each rationale.

Per sample (names are :class:`visualbert.vcr_detector.VisualBertForVCR`'s arguments):

- ``input_ids``, ``token_type_ids``, ``attention_mask``: int64 [4, T] (pre-training: [T])
- ``image_text_alignment``: int64 [4, V, K] ([V, K]), word-piece positions per box, -1 = none
- ``images`` float32 [3, H, W]; ``boxes`` float32 [V, 4]; ``box_mask``, ``box_classes`` int64 [V];
  ``box_segms`` float32 [V, 14, 14] (box 0 is the whole image)
- ``labels``: the right choice (int64; absent on the unlabelled test split), pre-training: MLM
  targets [T] (-100 where not masked); ``annot_id`` (str), not a model input.

The image and its metadata are read in ``__getitem__``, so DataLoader workers do that work; a
missing file is found when the dataset is built, a malformed one when it is read; either stops the
run with one line naming it and the item.
"""
import os

import numpy as np
import paddle

from .formats.vcr import read_vcr_metadata
from .inputs import IGNORE_INDEX, ExampleError, _TextIds, mask_tokens
from .vcr_inputs import IMAGE_SIZE, class_ids, encode_pair, kept_objects, object_masks, prepare_image, render_example

__all__ = ["VCRDataset", "VCRPretrainDataset", "VCRCollator"]

# The value each padded key is filled with (MLM labels: -100).
_PADDING = {"input_ids": 0, "token_type_ids": 0, "attention_mask": 0, "image_text_alignment": -1, "boxes": 0.0,
            "box_mask": 0, "box_classes": 0, "box_segms": 0.0}


class VCRCollator:
    """Pads every array of a batch to the batch's largest along each axis (text, boxes, alignment)."""

    def __init__(self, text_labels=False):
        self.text_labels = text_labels

    def __call__(self, samples):
        batch = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key in _PADDING or (key == "labels" and self.text_labels):
                batch[key] = _pad_all(values, IGNORE_INDEX if key == "labels" else _PADDING[key])
            elif key == "annot_id":
                batch[key] = values
            else:
                batch[key] = np.stack(values)
        return batch


def _pad_all(arrays, value):
    shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    out = np.full((len(arrays), *shape), value, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[(i, *(slice(0, n) for n in a.shape))] = a
    return out


def _alignment_array(alignment):
    width = max([len(p) for p in alignment] + [1])
    out = np.full((len(alignment), width), -1, dtype=np.int64)
    for box, positions in enumerate(alignment):
        out[box, :len(positions)] = positions
    return out


class _VCRBase(paddle.io.Dataset):
    text_labels = False

    def __init__(self, items, tokenizer, image_dir, max_seq_length=128, image_size=IMAGE_SIZE, train=False, seed=0):
        super().__init__()
        self.items = list(items)
        if not self.items:
            raise ValueError(f"{type(self).__name__}: no items")
        self.examples = self.items  # what the shared task code calls a dataset's records
        self.tokenizer, self.text = tokenizer, _TextIds(tokenizer)
        self.image_dir = image_dir
        self.max_seq_length, self.image_size = int(max_seq_length), tuple(image_size)
        self.train, self.seed, self.epoch = bool(train), int(seed), 0
        self.pieces = {}  # word -> word-pieces, shared by every item
        self._check_files()

    def _check_files(self):
        """Fail before any work when an item's image or metadata is missing (one line naming it)."""
        for item in self.items:
            for field in ("img_fn", "metadata_fn"):
                path = os.path.join(self.image_dir, item[field])
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{path}: no such file (the {field} of VCR annot_id {item['annot_id']}; "
                                            "--image_dir is the directory the release's vcr1images/ unpacks to)")

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def collate_fn(self):
        return VCRCollator(text_labels=self.text_labels)

    def _rng(self, index):
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _regions(self, item, index):
        """The detector's inputs for an item, and {object index: box}."""
        from PIL import Image, UnidentifiedImageError

        kept = kept_objects(item)
        where = f"(needed by VCR annot_id {item['annot_id']})"
        try:
            meta = read_vcr_metadata(os.path.join(self.image_dir, item["metadata_fn"]), len(item["objects"]))
            with Image.open(os.path.join(self.image_dir, item["img_fn"])) as image:
                pixels, boxes = prepare_image(image, meta["boxes"][kept, :4], self.image_size,
                                              rng=self._rng(index) if self.train else None)
        except UnidentifiedImageError:
            raise ExampleError(f"{os.path.join(self.image_dir, item['img_fn'])}: not an image {where}") from None
        except (OSError, ValueError) as e:
            raise ExampleError(f"{e} {where}") from None
        masks = object_masks(meta["boxes"][kept], [meta["segms"][k] for k in kept])
        regions = {"images": pixels, "boxes": boxes, "box_mask": np.ones(len(boxes), dtype=np.int64),
                   "box_classes": class_ids(item, kept),
                   "box_segms": np.concatenate([np.ones((1, *masks.shape[1:]), np.float32), masks])}
        return regions, {int(obj): n + 1 for n, obj in enumerate(kept)}

    def _pair(self, context, choice, box_of_object, num_boxes):
        ids, types, alignment = encode_pair(self.tokenizer, context, choice, box_of_object, num_boxes,
                                            self.max_seq_length, self.pieces)
        return ids, types, _alignment_array(alignment)


class VCRDataset(_VCRBase):
    """Q->A (``mode="answer"``) or QA->R (``mode="rationale"``) samples of VCR items.

    ``answer``: for QA->R, the answer every context ends with (0..3; the leaderboard scores the
    rationales given each answer); None = each item's labelled answer.
    """

    def __init__(self, items, tokenizer, image_dir, mode, answer=None, **kwargs):
        super().__init__(items, tokenizer, image_dir, **kwargs)
        if mode not in ("answer", "rationale"):
            raise ValueError(f"mode must be answer or rationale, got {mode!r}")
        self.mode, self.answer = mode, answer
        if mode == "rationale" and answer is None:
            unlabelled = next((i["annot_id"] for i in self.items if i["answer_label"] is None), None)
            if unlabelled is not None:
                raise ValueError(f"VCR annot_id {unlabelled} has no answer_label: rationales of unlabelled items are "
                                 "scored given a chosen answer")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        regions, box_of_object = self._regions(item, index)
        context, choices = render_example(item, self.mode, self.answer)
        pairs = [self._pair(context, choice, box_of_object, len(regions["boxes"])) for choice in choices]
        sample = {"input_ids": _pad_all([p[0] for p in pairs], 0), "token_type_ids": _pad_all([p[1] for p in pairs], 0),
                  "attention_mask": _pad_all([np.ones_like(p[0]) for p in pairs], 0),
                  "image_text_alignment": _pad_all([p[2] for p in pairs], -1), **regions,
                  "annot_id": item["annot_id"]}
        label = item[f"{self.mode}_label"]
        if label is not None:
            sample["labels"] = np.int64(label)
        return sample


class VCRPretrainDataset(_VCRBase):
    """Masked LM on the eight (context, choice) pairs of each item, each with the item's image.

    Every random choice is a pure function of ``(seed, epoch, index)``, as the other datasets'.
    """

    text_labels = True

    def __init__(self, items, tokenizer, image_dir, mask_prob=0.15, **kwargs):
        super().__init__(items, tokenizer, image_dir, **kwargs)
        self.mask_prob = mask_prob
        unlabelled = next((i["annot_id"] for i in self.items if i["answer_label"] is None), None)
        if unlabelled is not None:
            raise ValueError(f"VCR annot_id {unlabelled} has no answer_label (pre-training needs the labelled splits)")

    def __len__(self):
        return 8 * len(self.items)

    def __getitem__(self, index):
        item = self.items[index // 8]
        which = index % 8
        regions, box_of_object = self._regions(item, index)
        if which < 4:
            context, choices = render_example(item, "answer")
        else:
            context, choices = render_example(item, "rationale")
        ids, types, alignment = self._pair(context, choices[which % 4], box_of_object, len(regions["boxes"]))
        candidates = (ids != self.text.cls) & (ids != self.text.sep)
        masked, labels = mask_tokens(ids, candidates, self._rng(index), self.text.mask, self.text.vocab_size,
                                     self.mask_prob)
        return {"input_ids": masked, "token_type_ids": types, "attention_mask": np.ones_like(ids),
                "image_text_alignment": alignment, **regions, "labels": labels, "annot_id": item["annot_id"]}

