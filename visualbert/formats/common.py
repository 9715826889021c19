"""What every text format users bring shares: finding the file, JSON with a one-line error, the lines
of a text or JSON-lines file, integer ids, "True"/"False" labels, and the line that says which ids
two files disagree on.

Every message names the file (and the line or item where there is one) and what was expected there.
"""
import json
import operator
import os


def require_file(path, expected):
    """``path`` as a str; a missing file is one error naming it and what was ``expected`` there."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected {expected})")
    return path


def read_json(path, expected="a JSON file"):
    """A JSON file's value. A missing file, or text that is not JSON, is one line naming the file,
    where its JSON breaks and what was ``expected``. A byte-order mark (spreadsheets and some
    editors write one) is skipped."""
    path = require_file(path, expected)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                         f"expected {expected}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text: byte {e.object[e.start]:#04x} at offset "
                         f"{e.start}); expected {expected}") from None


def text_lines(path, expected):
    """(line number, "file:line", text) of each non-blank line of a text file, in order; a missing file
    is one error naming it and what was ``expected`` there."""
    path = require_file(path, expected)
    # utf-8-sig: spreadsheets save text with a byte-order mark, which would otherwise become part of line 1
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, f"{path}:{lineno}", line


def json_lines(path, expected):
    """(line number, "file:line", object) of each non-blank line of a JSON-lines file; a line that is
    not a JSON object is one error naming the file and line."""
    for lineno, where, line in text_lines(path, expected):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, found {type(item).__name__}")
        yield lineno, where, item


def integer_id(value, where, name="question_id"):
    """``value`` as an int, or one error line: ids must be integers, not strings or booleans.

    Anything usable as an index counts (numpy integers from imdb files included); bool is
    refused because a true/false id is a broken file, not id 1 or 0.
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    return operator.index(value)


def note_unique(first_seen, key, place, where, what, shown=None):
    """Record that id ``key`` (a ``what``: "question_id", "identifier") is at ``place`` ("line 3",
    "item 1"); one that ``first_seen`` already holds is one line naming both places (and the key
    as ``shown``, when given)."""
    if key in first_seen:
        raise ValueError(f"{where}: {what} {key if shown is None else shown} appears twice (also {first_seen[key]})")
    first_seen[key] = place


def true_or_false(value, where, what, identifier):
    """An NLVR2 label or prediction: a JSON boolean, or the text "True"/"False" in any case and with
    any surrounding spaces (the official scorer lowercases both sides); anything else is one line
    naming ``where``, ``what`` the value is ("label", "prediction") and the example's ``identifier``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() not in ("true", "false"):
        shown = text if isinstance(value, str) else value
        raise ValueError(f'{where}: {what} {shown!r} of {identifier} is not "True" or "False"')
    return text.lower() == "true"


def describe_id_mismatch(expected, got, what, got_name, expected_name, limit=5):
    """One line saying which ids one side lacks and which it has in excess, with examples."""
    missing = sorted(set(expected) - set(got), key=str)
    extra = sorted(set(got) - set(expected), key=str)
    parts = []
    if missing:
        shown = ", ".join(map(str, missing[:limit]))
        parts.append(f"{len(missing)} {what} missing from the {got_name} (e.g. {shown})")
    if extra:
        shown = ", ".join(map(str, extra[:limit]))
        parts.append(f"{len(extra)} {what} in the {got_name} are not in the {expected_name} (e.g. {shown})")
    return "; ".join(parts)


def check_ids_match(got_file, got, expected_file, expected, what, got_name, expected_name):
    """One line naming both files and the ids only one of them has, when ``got`` and ``expected``
    (ids, or dicts keyed by them) do not hold the same ids."""
    if set(got) != set(expected):
        raise ValueError(f"{got_file} does not match {expected_file}: "
                         + describe_id_mismatch(expected, got, what, got_name, expected_name))
