"""NLVR2 (lil-lab/nlvr): the example identifier, the JSON-lines splits and the prediction CSV.

- Identifier ``<split>-<set>-<pair>-<sentence>`` (``dev-850-0-1``): the first three fields name the
  image pair, whose files are ``dev-850-0-img0.png`` and ``dev-850-0-img1.png``; the identifier with
  its pair field blanked (``dev-850--1``) names the sentence, which every pair it was written for
  shares (the official consistency metric groups by it).
- Splits ``{train,dev,test1,test2}.json``: one object per line with ``identifier``, ``sentence`` and
  a ``label`` of "True"/"False" (absent on the unlabelled test2 split).
- Predictions (what lil-lab/nlvr's ``metrics.py`` scores): CSV lines ``identifier,True|False``.
"""
import collections
import re

from .common import json_lines, note_unique, text_lines, true_or_false

# Each field is free of hyphens and the sentence field is a number, so a name split differently
# (a missing field, an extra one) is refused rather than read as another pair.
_IDENTIFIER = re.compile(r"([^-]+)-([^-]+)-([^-]+)-(\d+)")

_IMAGE_NAME = re.compile(r"([^-]+)-([^-]+)-([^-]+)-img([01])\.png")

Nlvr2Identifier = collections.namedtuple("Nlvr2Identifier", "split set pair sentence")
Nlvr2ImageName = collections.namedtuple("Nlvr2ImageName", "split set pair side")


def parse_nlvr2_identifier(identifier, where=None):
    """``dev-850-0-1`` -> ``Nlvr2Identifier("dev", "850", "0", "1")``; anything else is one line
    (prefixed with ``where``, the file and line, when given)."""
    match = _IDENTIFIER.fullmatch(identifier) if isinstance(identifier, str) else None
    if match is None:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}NLVR2 identifier {identifier!r} is not of the form <split>-<set>-<pair>-<sentence> "
                         "(e.g. dev-850-0-1)")
    return Nlvr2Identifier(*match.groups())


def nlvr2_image_names(identifier):
    """The left and right image names of an example: ``dev-850-0-1`` -> ``dev-850-0-img0.png``, ``...-img1.png``."""
    parts = parse_nlvr2_identifier(identifier)
    pair = f"{parts.split}-{parts.set}-{parts.pair}"
    return f"{pair}-img0.png", f"{pair}-img1.png"


def parse_nlvr2_image_name(name):
    """``dev-850-0-img1.png`` -> ``Nlvr2ImageName("dev", "850", "0", "1")``; anything else is one line."""
    match = _IMAGE_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"NLVR2 image name {name!r} is not of the form <split>-<set>-<pair>-img0.png "
                         "or ...-img1.png (e.g. dev-850-0-img0.png)")
    return Nlvr2ImageName(*match.groups())


def nlvr2_sentence_key(identifier):
    """The sentence an example belongs to: its identifier with the image-pair field blanked.

    ``dev-850-2-0`` -> ``dev-850--0``: every image pair the same sentence was written for shares it.
    """
    parts = parse_nlvr2_identifier(identifier)
    return f"{parts.split}-{parts.set}--{parts.sentence}"


def read_nlvr2(path, need_label=True):
    """The examples of an NLVR2 split as dicts ``identifier`` (str), ``sentence`` (str) and
    ``label`` (bool, True = the sentence is true of the pair; None where absent), in file order.

    Every line needs a label unless ``need_label`` is false (test2 was released without them).
    Blank lines are skipped; identifiers must be unique.
    """
    examples, first_seen = [], {}
    for lineno, where, item in json_lines(path, "an NLVR2 split, JSON lines with identifier, sentence and label"):
        for field in ("identifier", "sentence"):
            if field not in item:
                raise ValueError(f"{where}: no '{field}' field")
            if not isinstance(item[field], str):
                raise ValueError(f"{where}: '{field}' must be a string, got {item[field]!r}")
        identifier = item["identifier"]
        parse_nlvr2_identifier(identifier, where)
        label = item.get("label")
        if label is None:
            if need_label:
                raise ValueError(f'{where}: identifier {identifier} has no \'label\' (expected "True" or '
                                 '"False"; only the unlabelled test2 split may lack it)')
        else:
            label = true_or_false(label, where, "label", identifier)
        note_unique(first_seen, identifier, f"line {lineno}", where, "identifier")
        examples.append({"identifier": identifier, "sentence": item["sentence"], "label": label})
    if not examples:
        raise ValueError(f"{path}: no examples (expected JSON lines with identifier, sentence and label)")
    return examples


def read_nlvr2_labels(path):
    """The labels of a labelled NLVR2 split as ``{identifier: bool}``, what the scorer compares against."""
    return {example["identifier"]: example["label"] for example in read_nlvr2(path)}


def read_nlvr2_predictions(path):
    """A prediction CSV (lines ``identifier,True|False``) as ``{identifier: bool}``.

    Case is ignored, as the official scorer lowercases both sides before comparing; blank lines are
    skipped; each identifier is predicted once.
    """
    predictions = {}
    for _, where, line in text_lines(path, "CSV lines identifier,True|False"):
        fields = line.strip().split(",")
        if len(fields) != 2:
            raise ValueError(f"{where}: expected identifier,True|False, got {line.strip()!r}")
        identifier = fields[0].strip()
        parse_nlvr2_identifier(identifier, where)
        if identifier in predictions:
            raise ValueError(f"{where}: identifier {identifier} is predicted twice")
        predictions[identifier] = true_or_false(fields[1], where, "prediction", identifier)
    return predictions
