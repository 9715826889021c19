"""Flickr30K Entities captions -> inputs of ``VisualBertForRegionToPhraseAlignment``, as the original trained.

Per caption (one item), beside the usual text and region inputs:

- ``input_ids``: ``[CLS] caption [SEP]``, the caption's words (markup removed) split into word
  pieces, types 0;
- ``region_to_phrase_position`` int64 [P]: per boxed phrase, the position of the last word piece of
  its last word (+1 for ``[CLS]``), where the head reads the phrase;
- ``labels`` float32 [P, V]: per phrase, uniform over the regions whose box has IoU >= 0.5 with one
  of the entity's ground-truth boxes, zeros when no region does (the phrase still counts for the
  upper bound and recall, but gives no loss: KL against zeros is 0);
- ``example_index``: which caption of ``examples`` the item is, for prediction files.

Regions come from a feature store that keeps each region's box (``extract``, ``features import``);
ground-truth boxes are normalised by the image size of the annotation, as the store's are, which
leaves the IoU unchanged. The original located a phrase by searching its words in the caption (the
first match, wrong when the words occur twice); here the markup's own word span is used.
"""
import numpy as np

from .metrics import grounding_hits
from .inputs import Collator, ExampleError, _VisualTextDataset

__all__ = ["GroundingDataset", "GroundingCollator", "PHRASE_PAD"]

PHRASE_PAD = -1  # region_to_phrase_position of a padding phrase (the head reads it as position 0)


class GroundingCollator(Collator):
    """Pads phrases per batch: positions with -1, labels to [B, most phrases, most regions] with 0."""

    def __call__(self, samples):
        positions = [s.pop("region_to_phrase_position") for s in samples]
        labels = [s.pop("labels") for s in samples]
        batch = super().__call__(samples)
        most_phrases = max(len(p) for p in positions)
        most_regions = batch["visual_embeds"].shape[1]
        batch["region_to_phrase_position"] = np.full((len(samples), most_phrases), PHRASE_PAD, dtype=np.int64)
        batch["labels"] = np.zeros((len(samples), most_phrases, most_regions), dtype=np.float32)
        for i, (p, l) in enumerate(zip(positions, labels)):
            batch["region_to_phrase_position"][i, :len(p)] = p
            batch["labels"][i, :l.shape[0], :l.shape[1]] = l
        return batch


class GroundingDataset(_VisualTextDataset):
    """Captions from ``annotations.read_flickr30k`` with the regions of ``features`` (which must keep boxes).

    ``image_key``: template from an image id to its key in the store (``{image_id}``).
    """

    def __init__(self, examples, tokenizer, features, image_key="{image_id}", max_seq_length=128,
                 visual_dtype="float32", spatial=False):
        super().__init__(examples, tokenizer, features, max_seq_length, visual_dtype=visual_dtype, spatial=spatial)
        if not getattr(features, "has_boxes", False):
            raise ValueError(f"{features.where()}: phrase grounding needs each region's box, but this store keeps "
                             "none; extract with python -m visualbert.extract --boxes, or import boxed features "
                             "(python -m visualbert.features import --format butd_tsv)")
        self.image_key = image_key
        self.tokens, self.positions = [], []
        for ex in self.examples:
            ids, positions = self._caption(ex)
            self.tokens.append(ids)
            self.positions.append(positions)

    def key(self, example):
        try:
            return self.image_key.format(image_id=example["image_id"])
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ValueError(f"--image_key {self.image_key!r} cannot name image {example['image_id']} ({e})") from None

    def _caption(self, example):
        """Word-piece ids of the caption and each phrase's query position (last piece of its last word, + [CLS])."""
        ids, word_end = [], []
        for word in example["words"]:
            ids.extend(self.text(word).tolist())
            word_end.append(len(ids))  # after [CLS], the word's last piece sits at this position
        positions = np.array([word_end[p["last_word"]] for p in example["phrases"]], dtype=np.int64)
        longest = self.max_seq_length - 2
        if positions.max() > longest:
            raise ValueError(f"caption {example['caption_index']} of image {example['image_id']} has a phrase ending "
                             f"at word piece {positions.max()}, past --max_seq_length {self.max_seq_length}")
        return np.asarray(ids[:longest], dtype=np.int64), positions

    def __getitem__(self, i):
        ex = self.examples[i]
        key = self.key(ex)
        item = self._single(self.tokens[i])
        try:
            item.update(self._visual_of(key))
            boxes = self.features.boxes(key)[:, :4]
        except (OSError, ValueError, KeyError) as e:
            raise ExampleError(f"{e} (needed by image {ex['image_id']} caption {ex['caption_index']})") from None
        scale = np.array([ex["width"], ex["height"], ex["width"], ex["height"]], dtype=np.float64)
        labels = np.zeros((len(ex["phrases"]), len(boxes)), dtype=np.float32)
        for row, phrase in zip(labels, ex["phrases"]):
            hits = grounding_hits(np.asarray(phrase["boxes"]) / scale, boxes)
            if hits.any():
                row[hits] = 1.0 / hits.sum()
        item["region_to_phrase_position"] = self.positions[i]
        item["labels"] = labels
        item["example_index"] = np.int64(i)
        return item

    def _visual_of(self, key):
        embeds = self._regions(key)
        return {"visual_embeds": embeds, "visual_token_type_ids": np.zeros(embeds.shape[0], dtype=np.int64),
                "visual_attention_mask": np.ones(embeds.shape[0], dtype=np.int64)}

    def collate_fn(self):
        return GroundingCollator()
