"""Readers for the downloaded annotation files that both training and scoring use.

- VQA2 imdb ``.npy`` (Pythia/MMF): a pickled object array with one dict per question, usually
  after a header dict (creation time, version, ...) at element 0; files without the header work
  too. Read through :mod:`visualbert.safeload`, because the file is a pickle from the internet.
- NLVR2 JSON lines (lil-lab/nlvr): one object per line with ``identifier``, ``sentence`` and a
  ``label`` of "True"/"False" (absent on the unlabelled test2 split).
- Flickr30K Entities (BryanPlummer/flickr30k_entities): ``Sentences/<image_id>.txt`` (one caption
  a line, phrases marked ``[/EN#<entity_id>/<type>[/<type>...] words]``), ``Annotations/<image_id>.xml``
  (VOC-style: the image size, then one ``object`` per box or per box-less entity, its entity ids as
  ``name`` elements, ``bndbox`` in pixels or ``nobndbox`` / ``scene`` flags) and the image lists
  ``train.txt`` / ``val.txt`` / ``test.txt``.
- VCR JSON lines (rowanz/r2c, ``{train,val,test}.jsonl``): one question per line whose tokens are
  words or lists of object indices, four answers, four rationales and (not on test) the labels;
  and each image's metadata JSON (``boxes`` with a detection score, ``segms`` polygons,
  ``width``, ``height``).

``visualbert.examples`` turns the records into training examples and ``visualbert.metrics`` into
ground truth, so a file means the same to both: the same fallback from ``answers`` to
``valid_answers``, the same checks, the same error lines. Bad content is rejected with one line
naming the file, the item (imdb: its index in the array, the header being item 0; NLVR2: its line
number), and what was expected. Nothing here imports Paddle, so the scorer runs without it.
"""
import collections
import json
import operator
import os
import re
from xml.parsers import expat

import numpy as np

from .safeload import load_npy

__all__ = ["integer_id", "read_vqa_imdb", "read_nlvr2", "parse_flickr30k_caption", "read_flickr30k_sentences",
           "read_flickr30k_boxes", "read_flickr30k_image_list", "read_flickr30k", "FLICKR30K_TYPES",
           "VCR_OBJECT_CLASSES", "read_vcr", "read_vcr_metadata"]


def integer_id(value, where, name="question_id"):
    """``value`` as an int, or one error line: ids must be integers, not strings or booleans.

    Anything usable as an index counts (numpy integers from imdb files included); bool is
    refused because a true/false id is a broken file, not id 1 or 0.
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    return operator.index(value)


# --------------------------------------------------------------------------------------------
# VQA2 imdb
# --------------------------------------------------------------------------------------------

# What each optional item field must hold. Callers say which fields they need: training needs
# the image fields, scoring needs the answers.
_IMDB_FIELDS = {
    "image_name": "a string",
    "image_id": "an integer",
    "feature_path": "a string",
    "question_str": "a string",
    "question_tokens": "a list of strings",
    "answers": "a list of strings",
}
# Keys only a question has; the header dict has none of them.
_QUESTION_KEYS = frozenset(("question_id", "valid_answers", *_IMDB_FIELDS))


def _is_empty(value):
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _checked(value, field, expected, where):
    if expected == "an integer":
        return integer_id(value, where, field)
    if expected == "a string" and isinstance(value, str):
        return str(value)
    if expected == "a list of strings":
        listed = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else value
        if isinstance(listed, (list, tuple)) and all(isinstance(v, str) for v in listed):
            return [str(v) for v in listed]
    raise ValueError(f"{where}: '{field}' must be {expected}, got {type(value).__name__} {value!r:.80}")


def _imdb_value(item, field, where):
    """One checked field of an imdb item, or None when absent."""
    value, expected = item.get(field), _IMDB_FIELDS[field]
    if field == "answers" and _is_empty(value) and not _is_empty(item.get("valid_answers")):
        # MMF imdbs keep the ten human answers in 'answers'; some carry only 'valid_answers', or
        # an empty 'answers' beside them. Either way 'valid_answers' stands in.
        field, value = "valid_answers", item["valid_answers"]
    if _is_empty(value):
        return None
    return _checked(value, field, expected, where)


def read_vqa_imdb(path, need=()):
    """The questions of an imdb file as a list of dicts, in file order.

    Each dict has ``question_id`` (int) and the fields of ``_IMDB_FIELDS``, None where the item
    does not give them; ``answers`` is ``valid_answers`` when ``answers`` is missing or empty.
    Fields named in ``need`` must be present (and ``answers`` non-empty). Question ids must be
    unique.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected a VQA imdb .npy)")
    array = load_npy(path)
    if array.dtype != object or array.ndim != 1:
        raise ValueError(f"{path}: expected an imdb object array (an optional header dict, then one dict "
                         f"per question), found {array.dtype} {array.shape}")
    # The header (creation time, version, ...) shares no key with a question, so a first question
    # that merely lacks its question_id is reported as such rather than skipped as a header.
    first = array[0] if len(array) else None
    start = 1 if isinstance(first, dict) and not _QUESTION_KEYS.intersection(first) else 0
    questions, first_seen = [], {}
    for index in range(start, len(array)):
        item = array[index]
        where = f"{path}: item {index}"
        if not isinstance(item, dict):
            raise ValueError(f"{where} is a {type(item).__name__}, expected a dict (one question)")
        if item.get("question_id") is None:
            raise ValueError(f"{where} has no 'question_id'")
        qid = integer_id(item["question_id"], where)
        where = f"{where} (question_id {qid})"
        record = {"question_id": qid}
        for field in _IMDB_FIELDS:
            record[field] = _imdb_value(item, field, where)
        for field in need:
            if record[field] is None:
                if field == "answers":
                    raise ValueError(f"{where} has neither 'answers' nor 'valid_answers' (expected the human "
                                     "answers; a test-split imdb has none)")
                raise ValueError(f"{where} has no '{field}'")
        if qid in first_seen:
            raise ValueError(f"{where}: question_id {qid} appears twice (also item {first_seen[qid]})")
        first_seen[qid] = index
        questions.append(record)
    if not questions:
        raise ValueError(f"{path}: the imdb holds no questions")
    return questions


# --------------------------------------------------------------------------------------------
# NLVR2 JSON lines
# --------------------------------------------------------------------------------------------

# split-set-pair-sentence, e.g. "dev-850-0-0": the pair field names the image files, the
# identifier with that field blanked names the sentence, so both must be there.
_NLVR2_IDENTIFIER = re.compile(r"[^-]+-[^-]+-[^-]+-\d+")


def _nlvr2_label(value, where, identifier):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f'{where}: label {value!r} of {identifier} is not "True" or "False"')
    return text == "true"


def _lines(path, expected):
    """(line number, "file:line", text) of each non-blank line of a text file, in order; a missing file
    is one error naming it and what was ``expected`` there."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected {expected})")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, f"{path}:{lineno}", line


def _json_lines(path, expected):
    """(line number, "file:line", object) of each non-blank line of a JSON-lines file; a line that is
    not a JSON object is one error naming the file and line."""
    for lineno, where, line in _lines(path, expected):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, found {type(item).__name__}")
        yield lineno, where, item


def read_nlvr2(path, need_label=True):
    """The examples of an NLVR2 split as dicts ``identifier`` (str), ``sentence`` (str) and
    ``label`` (bool, True = the sentence is true of the pair; None where absent), in file order.

    Every line needs a label unless ``need_label`` is false (test2 was released without them).
    Blank lines are skipped; identifiers must be unique.
    """
    examples, first_seen = [], {}
    for lineno, where, item in _json_lines(path, "an NLVR2 split, JSON lines with identifier, sentence and label"):
        for field in ("identifier", "sentence"):
            if field not in item:
                raise ValueError(f"{where}: no '{field}' field")
            if not isinstance(item[field], str):
                raise ValueError(f"{where}: '{field}' must be a string, got {item[field]!r}")
        identifier = item["identifier"]
        if not _NLVR2_IDENTIFIER.fullmatch(identifier):
            raise ValueError(f"{where}: NLVR2 identifier '{identifier}' is not of the form "
                             "<split>-<set>-<pair>-<sentence>")
        label = item.get("label")
        if label is None:
            if need_label:
                raise ValueError(f'{where}: identifier {identifier} has no \'label\' (expected "True" or '
                                 '"False"; only the unlabelled test2 split may lack it)')
        else:
            label = _nlvr2_label(label, where, identifier)
        if identifier in first_seen:
            raise ValueError(f"{where}: identifier {identifier} appears twice (also line {first_seen[identifier]})")
        first_seen[identifier] = lineno
        examples.append({"identifier": identifier, "sentence": item["sentence"], "label": label})
    if not examples:
        raise ValueError(f"{path}: no examples (expected JSON lines with identifier, sentence and label)")
    return examples


# --------------------------------------------------------------------------------------------
# Flickr30K Entities
# --------------------------------------------------------------------------------------------

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
                for _, where, line in _lines(path, "the image's Flickr30K Entities captions")]
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
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected the image's Flickr30K Entities boxes)")
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
    for _, where, line in _lines(path, "a Flickr30K Entities image list, one image id a line"):
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
# VCR JSON lines and image metadata
# --------------------------------------------------------------------------------------------

# The names VCR's ``objects`` field uses: the 80 COCO classes as r2c's cocoontology.json spells
# them (no spaces), in COCO id order. Class id = index + 1; 0 is the whole-image box.
VCR_OBJECT_CLASSES = (
    "person bicycle car motorcycle airplane bus train truck boat trafficlight firehydrant stopsign "
    "parkingmeter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sportsball kite baseballbat baseballglove skateboard surfboard "
    "tennisracket bottle wineglass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hotdog pizza donut cake chair couch pottedplant bed diningtable toilet tv laptop mouse remote keyboard "
    "cellphone microwave oven toaster sink refrigerator book clock vase scissors teddybear hairdrier "
    "toothbrush").split()
VCR_NUM_CHOICES = 4


def _vcr_tokens(value, field, num_objects, where):
    """A VCR sentence: a list whose items are words or non-empty lists of valid object indices."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: '{field}' must be a non-empty list of words and object-index lists")
    for token in value:
        if isinstance(token, str):
            continue
        if (isinstance(token, list) and token
                and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_objects for i in token)):
            continue
        raise ValueError(f"{where}: '{field}' token {token!r} is neither a word nor a list of object indices "
                         f"below {num_objects} (the item has {num_objects} objects)")
    return value


def _vcr_label(item, field, where):
    value = item.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < VCR_NUM_CHOICES:
        raise ValueError(f"{where}: '{field}' must be an integer 0..{VCR_NUM_CHOICES - 1}, got {value!r}")
    return value


def _vcr_item(item, where, need_labels):
    for field in ("annot_id", "img_fn", "metadata_fn"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise ValueError(f"{where}: '{field}' must be a non-empty string, got {item.get(field)!r}")
    where = f"{where} (annot_id {item['annot_id']})"
    objects = item.get("objects")
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise ValueError(f"{where}: 'objects' must be a list of class names")
    unknown = sorted(set(objects) - set(VCR_OBJECT_CLASSES))
    if unknown:
        raise ValueError(f"{where}: 'objects' names {unknown[0]!r}, not one of the 80 COCO classes VCR uses")
    record = {"annot_id": item["annot_id"], "objects": list(objects), "img_fn": item["img_fn"],
              "metadata_fn": item["metadata_fn"],
              "question": _vcr_tokens(item.get("question"), "question", len(objects), where)}
    for field in ("answer_choices", "rationale_choices"):
        choices = item.get(field)
        if not isinstance(choices, list) or len(choices) != VCR_NUM_CHOICES:
            raise ValueError(f"{where}: '{field}' must be a list of {VCR_NUM_CHOICES} token lists")
        record[field] = [_vcr_tokens(c, f"{field}[{i}]", len(objects), where) for i, c in enumerate(choices)]
    for field in ("answer_label", "rationale_label"):
        if field in item and item[field] is not None:
            record[field] = _vcr_label(item, field, where)
        elif need_labels:
            raise ValueError(f"{where}: no '{field}' (expected 0..3; only the test split comes without labels)")
        else:
            record[field] = None
    return record


def read_vcr(path, need_labels=True):
    """The items of a VCR split (``train.jsonl``, ``val.jsonl``, ``test.jsonl``) as dicts, in file order.

    Each has ``annot_id``, ``objects`` (class names), ``img_fn``, ``metadata_fn``, ``question``,
    ``answer_choices`` and ``rationale_choices`` (four token lists each; a token is a word or a
    list of indices into ``objects``), ``answer_label`` and ``rationale_label`` (0..3, None where
    absent, which only ``need_labels=False`` allows: the test split has none). Other fields of the
    release (movie, question_orig, ...) are not needed and not kept. Blank lines are skipped;
    annot_ids must be unique.
    """
    items, first_seen = [], {}
    for lineno, where, item in _json_lines(path, "a VCR split, JSON lines with annot_id, objects, question, "
                                                 "answer_choices, rationale_choices, ..."):
        record = _vcr_item(item, where, need_labels)
        annot_id = record["annot_id"]
        if annot_id in first_seen:
            raise ValueError(f"{where}: annot_id {annot_id} appears twice (also line {first_seen[annot_id]})")
        first_seen[annot_id] = lineno
        items.append(record)
    if not items:
        raise ValueError(f"{path}: no items (expected VCR JSON lines)")
    return items


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _polygon(value):
    return (isinstance(value, list) and len(value) >= 3
            and all(isinstance(p, list) and len(p) == 2 and all(_number(c) for c in p) for p in value))


def read_vcr_metadata(path, num_objects=None):
    """An image's VCR metadata JSON as ``{"boxes": float32 [N, 5], "segms": [[polygon, ...]] * N,
    "width": int, "height": int}``; a box is ``x1, y1, x2, y2, score`` in image pixels, a polygon a
    list of ``[x, y]`` points. ``num_objects`` (the item's object count) must not exceed N.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected a VCR image metadata JSON with boxes, segms, "
                                "width and height)")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected VCR image metadata") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with boxes, segms, width and height")
    for field in ("width", "height"):
        value = data.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{path}: '{field}' must be a positive integer, got {value!r}")
    boxes, segms = data.get("boxes"), data.get("segms")
    if not isinstance(boxes, list) or not isinstance(segms, list) or len(boxes) != len(segms):
        raise ValueError(f"{path}: 'boxes' and 'segms' must be lists of the same length (one per detection)")
    for index, (box, polygons) in enumerate(zip(boxes, segms)):
        if not (isinstance(box, list) and len(box) == 5 and all(_number(v) for v in box)):
            raise ValueError(f"{path}: boxes[{index}] must be [x1, y1, x2, y2, score], got {box!r:.80}")
        if not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
            raise ValueError(f"{path}: boxes[{index}] {box[:4]} is not a box (expected 0 <= x1 < x2, 0 <= y1 < y2)")
        if not isinstance(polygons, list) or not all(_polygon(p) for p in polygons):
            raise ValueError(f"{path}: segms[{index}] must be a list of polygons, each a list of >= 3 [x, y] points")
    if num_objects is not None and num_objects > len(boxes):
        raise ValueError(f"{path}: {len(boxes)} boxes, but the item names {num_objects} objects")
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 5), "segms": segms,
            "width": data["width"], "height": data["height"]}
