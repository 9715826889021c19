"""VCR items -> model inputs, as the original VisualBERT VCR code built them (numpy only, no Paddle).

A VCR sentence mixes words and lists of object indices (``["Why", "is", [0], "smiling", "?"]``).
The pieces, in the order a training example is made:

- :func:`render`: object indices become words. A person gets a gender-neutral name, any other
  object its class name; a list of several indices becomes several words (``[0, 1]`` -> ``Casey
  Riley``, no "and": the original emits one word per index). Names are given in order of first
  appearance; the context's names carry into each choice. The original counts new people from 0
  again in every choice, so a person first named in a choice can get a name the context already
  gave someone else; that is kept, because the released models were trained on that text.
- :func:`kept_objects`: the detections an item uses: every object referenced anywhere in the
  question, the four answers or the four rationales, all people when a word is "everyone" /
  "everyones", all people when nothing is referenced. The whole image is prepended as box 0
  (class 0, "__background__").
- :func:`encode_pair`: ``[CLS] context [SEP] choice [SEP]`` (token types 0 / 1), each word split
  into word-pieces, and ``image_text_alignment``: for each kept box the positions of the
  word-pieces that name it (the original recorded the word's index in the rendered sentence
  instead of its word-piece position, which drifts once a word before it splits; here each box is
  aligned to the pieces that actually name it). Too long a pair loses word-pieces from the start of
  the choice, as the original truncates.
- :func:`prepare_image` / :func:`object_masks`: the image scaled to fit 768 x 384 (aspect kept,
  bilinear), padded with black, centred (randomly placed when training), ImageNet-normalised;
  boxes moved with it; each box's polygons rasterised to a 14 x 14 mask of points inside.

Q->A uses the question as context and the answers as choices; QA->R the question followed by an
answer (the right one when training, each of the four when predicting for the leaderboard) and
the rationales as choices.
"""
import numpy as np

from .formats.vcr import VCR_OBJECT_CLASSES

__all__ = ["GENDER_NEUTRAL_NAMES", "IMAGE_SIZE", "MASK_SIZE", "render", "render_example", "kept_objects",
           "encode_pair", "prepare_image", "object_masks", "class_ids"]

# The names the original gives people, in its order (Peyton twice, as there).
GENDER_NEUTRAL_NAMES = ("Casey", "Riley", "Jessie", "Jackie", "Avery", "Jaime", "Peyton", "Kerry", "Jody",
                        "Kendall", "Peyton", "Skyler", "Frankie", "Pat", "Quinn")
IMAGE_SIZE = (768, 384)  # width, height
MASK_SIZE = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CLASS_ID = {name: i + 1 for i, name in enumerate(VCR_OBJECT_CLASSES)}


def render(tokens, objects, names=None):
    """(words, object index per word or -1, names) for a VCR token list.

    ``names`` maps object index -> word from an earlier call (the context's), and the returned one
    adds the objects named here.
    """
    names = dict(names or {})
    new_people = 0
    words, refs = [], []
    for token in tokens:
        if isinstance(token, str):
            words.append(token)
            refs.append(-1)
            continue
        for index in token:
            if index not in names:
                if objects[index] == "person":
                    names[index] = GENDER_NEUTRAL_NAMES[new_people % len(GENDER_NEUTRAL_NAMES)]
                    new_people += 1
                else:
                    names[index] = objects[index]
            words.append(names[index])
            refs.append(index)
    return words, refs, names


def render_example(item, mode, answer=None):
    """The rendered context and four choices of an item for ``mode`` "answer" or "rationale".

    Returns ``(context, choices)``: ``context`` is (words, refs), ``choices`` four (words, refs).
    For "rationale", ``answer`` picks the answer the context ends with (default: the labelled one).
    """
    if mode == "answer":
        context_tokens, choices = item["question"], item["answer_choices"]
    else:
        answer = item["answer_label"] if answer is None else answer
        context_tokens, choices = item["question"] + item["answer_choices"][answer], item["rationale_choices"]
    words, refs, names = render(context_tokens, item["objects"])
    rendered = []
    for choice in choices:
        choice_words, choice_refs, _ = render(choice, item["objects"], names)
        rendered.append((choice_words, choice_refs))
    return (words, refs), rendered


def kept_objects(item):
    """Indices into ``item["objects"]`` of the detections the item uses (sorted)."""
    objects = item["objects"]
    people = np.array([o == "person" for o in objects], dtype=bool)
    keep = np.zeros(len(objects), dtype=bool)
    for sentence in [item["question"], *item["answer_choices"], *item["rationale_choices"]]:
        for token in sentence:
            if isinstance(token, list):
                keep[token] = True
            elif token.lower() in ("everyone", "everyones"):
                keep |= people
    if not keep.any():
        keep |= people
    return np.flatnonzero(keep)


def class_ids(item, kept):
    """Class ids of the boxes: 0 for the whole image, then 1 + the COCO class of each kept object."""
    return np.array([0] + [_CLASS_ID[item["objects"][i]] for i in kept], dtype=np.int64)


def _pieces(tokenizer, words, refs, cache):
    pieces, piece_refs = [], []
    for word, ref in zip(words, refs):
        split = cache.get(word)
        if split is None:
            split = cache[word] = tokenizer.tokenize(word)
        pieces.extend(split)
        piece_refs.extend([ref] * len(split))
    return pieces, piece_refs


def encode_pair(tokenizer, context, choice, box_of_object, num_boxes, max_seq_length=128, cache=None):
    """Token ids, token types and image_text_alignment of ``[CLS] context [SEP] choice [SEP]``.

    ``context`` and ``choice`` are (words, refs) from :func:`render`; ``box_of_object`` maps an
    object index to its box (1 + its place among the kept objects). Returns
    ``(input_ids int64 [T], token_type_ids int64 [T], alignment list of position lists per box)``.
    """
    cache = {} if cache is None else cache
    a, a_refs = _pieces(tokenizer, *context, cache)
    b, b_refs = _pieces(tokenizer, *choice, cache)
    excess = len(a) + len(b) + 3 - max_seq_length
    if excess > 0:
        cut = min(excess, max(len(b) - 1, 0))  # the original cuts the choice's start first
        b, b_refs = b[cut:], b_refs[cut:]
        excess -= cut
        if excess > 0:
            a, a_refs = a[:len(a) - excess], a_refs[:len(a) - excess]
    tokens = ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    alignment = [[] for _ in range(num_boxes)]
    for offset, refs in ((1, a_refs), (len(a) + 2, b_refs)):
        for position, ref in enumerate(refs):
            if ref >= 0:
                alignment[box_of_object[ref]].append(offset + position)
    ids = np.asarray(tokenizer.convert_tokens_to_ids(tokens), dtype=np.int64)
    return ids, np.asarray(types, dtype=np.int64), alignment


def prepare_image(image, boxes, image_size=IMAGE_SIZE, rng=None):
    """A PIL image and its boxes [N, 4] (pixels) as the detector's input.

    Returns ``(pixels float32 [3, H, W] normalised, boxes float32 [1 + N, 4])``: the image scaled
    to fit ``image_size`` (width, height), padded with black, and the boxes moved with it after the
    window box of the image itself. ``rng`` places the image randomly in the padding (training);
    without it the image is centred.
    """
    from PIL import Image

    width, height = image_size
    image = image.convert("RGB")
    scale = min(width / image.width, height / image.height)
    if scale != 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    x_pad, y_pad = width - image.width, height - image.height
    left = int(rng.integers(0, x_pad + 1)) if rng is not None else x_pad // 2
    top = int(rng.integers(0, y_pad + 1)) if rng is not None else y_pad // 2
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    canvas[top:top + image.height, left:left + image.width] = np.asarray(image, dtype=np.float32) / 255.0
    pixels = ((canvas - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    window = np.array([[left, top, left + image.width, top + image.height]], dtype=np.float32)
    moved = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale + np.array([left, top, left, top], np.float32)
    moved = np.clip(moved, window[:, [0, 1, 0, 1]], window[:, [2, 3, 2, 3]])  # a detection may overhang
    return np.ascontiguousarray(pixels, dtype=np.float32), np.concatenate([window, moved])


def _inside(points, polygon):
    """Even-odd rule: which of ``points`` [P, 2] lie inside ``polygon`` [[x, y], ...]."""
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return (straddles & (x < crossing_x)).sum(1) % 2 == 1


def object_masks(boxes, segms, size=MASK_SIZE):
    """float32 [N, size, size]: 1 where a grid point inside each box lies in one of its polygons.

    The grid's points are spaced evenly and keep half a step from the box's edges (as the
    original). Boxes and polygons are in the same (original image) pixels.
    """
    masks = np.zeros((len(boxes), size, size), dtype=np.float32)
    for n, (box, polygons) in enumerate(zip(boxes, segms)):
        xs = np.linspace(box[0], box[2], 2 * size + 1)[1::2]
        ys = np.linspace(box[1], box[3], 2 * size + 1)[1::2]
        grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
        inside = np.zeros(len(grid), dtype=bool)
        for polygon in polygons:
            inside |= _inside(grid, polygon)
        masks[n] = inside.reshape(size, size)
    return masks
