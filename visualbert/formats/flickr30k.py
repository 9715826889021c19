"""Flickr30K Entities (BryanPlummer/flickr30k_entities) and the grounding predictions scored against it.

- ``Sentences/<image_id>.txt``: one caption a line, phrases marked
  ``[/EN#<entity_id>/<type>[/<type>...] words]``.
- ``Annotations/<image_id>.xml`` (VOC-style): the image size, then one ``object`` per box or per
  box-less entity, its entity ids as ``name`` elements, ``bndbox`` in pixels or ``nobndbox`` /
  ``scene`` flags.
- Image lists ``train.txt`` / ``val.txt`` / ``test.txt``: one image id a line.
- Predictions (``Flickr30K/run_predict.py``): a JSON list of ``{"image_id", "caption_index",
  "phrase_index", "boxes"}``, the boxes best first.
"""
import collections
import os
import re
from xml.parsers import expat

import numpy as np

from .common import integer_id, read_json, require_file, text_lines

# The entity types of the release; ``notvisual`` phrases (entity id 0) never have a box.
FLICKR30K_TYPES = ("people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other")
_FLICKR_HEADER = re.compile(r"\[/EN#(\d+)((?:/[^/\s\[\]]+)+)")
_IMAGE_ID = re.compile(r"[^\s/\\]+")


def parse_flickr30k_caption(line, where):
    """One caption line -> ``{"sentence", "words", "phrases"}``.

    ``sentence`` is the caption without markup, its words joined by single spaces (as the original
    code's ``remove_annotations`` leaves it); each phrase is a dict ``entity_id`` (int), ``types``
    (list of str), ``text``, ``first_word`` / ``last_word`` (indices into ``words``) and ``start`` /
    ``end`` (character span in ``sentence``). Phrases are listed in the order they open. Nested
    markup is read as written (the outer phrase spans the inner one); markup that does not close,
    a ``]`` that closes nothing or a phrase without words is one error line at ``where``.
    """
    words, phrases, open_phrases = [], [], []
    for token in line.split():
        header = _FLICKR_HEADER.match(token)
        if header:
            if header.end() != len(token):
                raise ValueError(f"{where}: phrase markup {token!r} is not followed by a space (expected "
                                 "[/EN#<entity_id>/<type> words])")
            phrase = {"entity_id": int(header.group(1)), "types": header.group(2).strip("/").split("/"),
                      "first_word": len(words)}
            open_phrases.append(phrase)
            phrases.append(phrase)
            continue
        if token.startswith("[/EN#"):
            raise ValueError(f"{where}: malformed phrase markup {token!r} (expected [/EN#<entity_id>/<type> words])")
        # "]" ends the innermost phrase at the word it is part of ("dog]'s" -> the word "dog's")
        word = token.replace("]", "")
        if word:
            words.append(word)
        for _ in range(token.count("]")):
            if not open_phrases:
                raise ValueError(f"{where}: ']' closes no phrase (in {token!r})")
            phrase = open_phrases.pop()
            if phrase["first_word"] == len(words):
                raise ValueError(f"{where}: phrase of entity {phrase['entity_id']} has no words")
            phrase["last_word"] = len(words) - 1
    if open_phrases:
        raise ValueError(f"{where}: phrase of entity {open_phrases[-1]['entity_id']} is not closed with ']'")
    sentence = " ".join(words)
    starts = [0]
    for w in words:
        starts.append(starts[-1] + len(w) + 1)
    for phrase in phrases:
        phrase["start"] = starts[phrase["first_word"]]
        phrase["end"] = starts[phrase["last_word"] + 1] - 1
        phrase["text"] = sentence[phrase["start"]:phrase["end"]]
    return {"sentence": sentence, "words": words, "phrases": phrases}


def read_flickr30k_sentences(path):
    """The captions of one ``Sentences/<image_id>.txt``, in file order (blank lines skipped)."""
    captions = [parse_flickr30k_caption(line, where)
                for _, where, line in text_lines(path, "the image's Flickr30K Entities captions")]
    if not captions:
        raise ValueError(f"{path}: no captions")
    return captions


def _xml_elements(path):
    """Parse a small XML file into ``(tag, line, text, children)`` tuples, keeping each element's line
    for the error messages (ElementTree forgets them). Malformed XML is one line naming the place."""
    root, stack = [], []
    parser = expat.ParserCreate()

    def start(tag, attrs):
        element = (tag, parser.CurrentLineNumber, [], [])
        (stack[-1][3] if stack else root).append(element)
        stack.append(element)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: stack.pop()
    parser.CharacterDataHandler = lambda data: stack[-1][2].append(data) if stack else None
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except expat.ExpatError as e:
            raise ValueError(f"{path}:{e.lineno}: not well-formed XML ({expat.ErrorString(e.code)})") from None
    return root[0]


def _children(element, tag):
    return [c for c in element[3] if c[0] == tag]


def _text(element):
    return "".join(element[2]).strip()


def _pixel(element, tag, path):
    found = _children(element, tag)
    if len(found) != 1:
        raise ValueError(f"{path}:{element[1]}: <{element[0]}> needs one <{tag}>, found {len(found)}")
    text = _text(found[0])
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{found[0][1]}: <{tag}> {text!r} is not a number") from None


def read_flickr30k_boxes(path):
    """One ``Annotations/<image_id>.xml`` -> ``{"width", "height", "boxes", "nobox", "scene"}``.

    ``boxes``: {entity_id: [[x1, y1, x2, y2], ...]} in pixels (an entity may have several boxes,
    and one box may name several entities); ``nobox`` / ``scene``: the entity ids marked so.
    """
    path = require_file(path, "the image's Flickr30K Entities boxes")
    root = _xml_elements(path)
    sizes = _children(root, "size")
    if len(sizes) != 1:
        raise ValueError(f"{path}:{root[1]}: expected one <size> with the image's <width> and <height>")
    width, height = _pixel(sizes[0], "width", path), _pixel(sizes[0], "height", path)
    if not (width > 0 and height > 0):
        raise ValueError(f"{path}:{sizes[0][1]}: image size {width:g} x {height:g} is not positive")
    boxes, nobox, scene = collections.defaultdict(list), set(), set()
    for obj in _children(root, "object"):
        ids = []
        for name in _children(obj, "name"):
            if not _text(name).isdigit():
                raise ValueError(f"{path}:{name[1]}: entity id {_text(name)!r} is not a number")
            ids.append(int(_text(name)))
        if not ids:
            raise ValueError(f"{path}:{obj[1]}: <object> names no entity (expected <name>entity id</name>)")
        flags = {tag: _text(_children(obj, tag)[0]) == "1" for tag in ("nobndbox", "scene") if _children(obj, tag)}
        bndbox = _children(obj, "bndbox")
        if bndbox:
            box = [_pixel(bndbox[0], tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")]
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"{path}:{bndbox[0][1]}: box {box} has no area (expected xmin < xmax, ymin < ymax)")
            for entity in ids:
                boxes[entity].append(box)
        else:
            for entity in ids:
                if flags.get("scene"):
                    scene.add(entity)
                else:
                    nobox.add(entity)
    return {"width": width, "height": height, "boxes": dict(boxes), "nobox": nobox, "scene": scene}


def read_flickr30k_image_list(path):
    """The image ids of an image list (``train.txt`` ...), one a line, in file order."""
    ids = []
    for _, where, line in text_lines(path, "a Flickr30K Entities image list, one image id a line"):
        text = line.strip()
        if not _IMAGE_ID.fullmatch(text):
            raise ValueError(f"{where}: {text!r} is not an image id")
        ids.append(text)
    if not ids:
        raise ValueError(f"{path}: the image list is empty")
    return ids


def read_flickr30k(root, image_ids, on_image=None):
    """The captions of ``image_ids`` under a Flickr30K Entities ``root`` with their boxed phrases.

    Returns ``(examples, summary)``: one example per caption that has at least one phrase whose
    entity has a box, ``{"image_id", "caption_index", "sentence", "words", "phrases", "width",
    "height"}``; each kept phrase also carries ``phrase_index`` (its place among all the caption's
    phrases) and ``boxes`` (the entity's ground-truth boxes in pixels). As the original code, a
    phrase whose entity has no box (``notvisual``, ``nobox``, ``scene``) is left out; ``summary``
    counts them per type (a phrase of several types counts under the first) and counts the rest.
    ``on_image(n)`` is called after the n-th image (progress for the 30k images of the train split).
    """
    examples = []
    summary = {"images": 0, "captions": 0, "phrases": 0, "left_out": collections.Counter()}
    for image_id in image_ids:
        captions = read_flickr30k_sentences(os.path.join(root, "Sentences", f"{image_id}.txt"))
        boxes = read_flickr30k_boxes(os.path.join(root, "Annotations", f"{image_id}.xml"))
        summary["images"] += 1
        if on_image:
            on_image(summary["images"])
        for index, caption in enumerate(captions):
            kept = []
            for phrase_index, phrase in enumerate(caption["phrases"]):
                gt = boxes["boxes"].get(phrase["entity_id"])
                if gt is None:
                    summary["left_out"][phrase["types"][0]] += 1
                    continue
                kept.append(dict(phrase, phrase_index=phrase_index, boxes=gt))
            if kept:
                summary["captions"] += 1
                summary["phrases"] += len(kept)
                examples.append({"image_id": image_id, "caption_index": index, "sentence": caption["sentence"],
                                 "words": caption["words"], "phrases": kept, "width": boxes["width"],
                                 "height": boxes["height"]})
    return examples, summary


def read_grounding_predictions(path):
    """``{(image_id, caption_index, phrase_index): float [M, 4] boxes best first}`` from Flickr30K/run_predict.py's file."""
    path = os.fspath(path)
    records = read_json(path, "a JSON list of ranked boxes per phrase (Flickr30K/run_predict.py)")
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of phrases, found {type(records).__name__}")
    out = {}
    for i, record in enumerate(records):
        where = f"{path}: item {i}"
        if not isinstance(record, dict) or not all(k in record for k in ("image_id", "caption_index", "phrase_index", "boxes")):
            raise ValueError(f"{where}: expected an object with image_id, caption_index, phrase_index and boxes")
        key = (str(record["image_id"]), integer_id(record["caption_index"], where, "caption_index"),
               integer_id(record["phrase_index"], where, "phrase_index"))
        try:
            boxes = np.asarray(record["boxes"], dtype=np.float64)
        except (TypeError, ValueError):
            boxes = None
        if boxes is None or (boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4)) or not np.isfinite(boxes).all():
            raise ValueError(f"{where}: boxes must be a list of [x1, y1, x2, y2] numbers")
        boxes = boxes.reshape(-1, 4)
        if key in out:
            raise ValueError(f"{where}: image {key[0]} caption {key[1]} phrase {key[2]} appears twice")
        out[key] = boxes
    return out
