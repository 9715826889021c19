"""The one reader of each text format users bring: training (examples) and scoring (evaluate) see the same thing."""
import json
import os

import numpy as np
import pytest

from visualbert.features import FEATURE_TYPES
from visualbert.formats import coco, common, nlvr2, vqa
from visualbert import examples as D
from visualbert.safeload import UnsafePickleError

HEADER = {"create_time": "x", "dataset_name": "vqa", "version": 1, "has_answer": True}


def item(qid, **fields):
    name = f"COCO_val2014_{qid:012d}"
    out = {"image_name": name, "image_id": qid, "question_id": qid, "feature_path": name + ".npy",
           "question_str": "what is it?", "question_tokens": ["what", "is", "it"], "answers": ["dog"] * 10}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


def write_imdb(path, elements):
    array = np.empty(len(elements), dtype=object)
    for i, element in enumerate(elements):
        array[i] = element
    np.save(path, array, allow_pickle=True)  # our own test file; reading goes through safeload
    return str(path)


def training_answers(path):
    return {ex["question_id"]: ex["answers"] for ex in D.read_vqa2_imdb(path, "val")}


def scoring_answers(path):
    return {qid: gt["answers"] for qid, gt in vqa.read_vqa_ground_truth(path).items()}


def test_empty_answers_fall_back_to_valid_answers_for_training_and_scoring(tmp_path):
    path = write_imdb(tmp_path / "imdb_val2014.npy", [
        HEADER,
        item(1),
        item(2, answers=[], valid_answers=["cat"] * 10),     # present but empty
        item(3, answers=None, valid_answers=["two"] * 10),   # missing
    ])
    expected = {1: ["dog"] * 10, 2: ["cat"] * 10, 3: ["two"] * 10}
    assert training_answers(path) == expected
    assert scoring_answers(path) == expected


def test_imdb_with_and_without_header_read_the_same(tmp_path):
    items = [item(5), item(6, answers=["red"] * 4 + ["blue"] * 6)]
    with_header = write_imdb(tmp_path / "with.npy", [HEADER] + items)
    without = write_imdb(tmp_path / "without.npy", items)
    assert vqa.read_vqa_imdb(with_header) == vqa.read_vqa_imdb(without)
    assert training_answers(without) == training_answers(with_header) == {5: ["dog"] * 10, 6: ["red"] * 4 + ["blue"] * 6}
    assert scoring_answers(without) == scoring_answers(with_header)
    # a question's numpy integer id and array of answers are plain Python values once read
    numpy_valued = write_imdb(tmp_path / "numpy.npy", [item(7, question_id=np.int64(7), answers=np.array(["x"] * 10))])
    (record,) = vqa.read_vqa_imdb(numpy_valued)
    assert type(record["question_id"]) is int and record["answers"] == ["x"] * 10


@pytest.mark.parametrize("elements, message", [
    ([HEADER, item(1), ["not", "a", "dict"]], "item 2 is a list, expected a dict (one question)"),
    ([item(1), "text"], "item 1 is a str, expected a dict (one question)"),
    ([HEADER, item(1), item(2, question_id=None)], "item 2 has no 'question_id'"),
    ([item(1, question_id=None), item(2)], "item 0 has no 'question_id'"),  # not mistaken for a header
    ([HEADER, item(1), item(2, question_id="2")], "item 2: question_id must be an integer, got '2'"),
    ([HEADER, item(1, question_id=True)], "item 1: question_id must be an integer, got True"),
    ([HEADER, item(1), item(2, answers="dog")],
     "item 2 (question_id 2): 'answers' must be a list of strings, got str 'dog'"),
    ([HEADER, item(3, answers=["dog"] * 9 + [7])],
     "item 1 (question_id 3): 'answers' must be a list of strings, got list"),
    ([HEADER, item(3, answers=[], valid_answers="dog")],
     "item 1 (question_id 3): 'valid_answers' must be a list of strings"),
    ([HEADER, item(4, image_id="4")], "item 1 (question_id 4): image_id must be an integer, got '4'"),
    ([HEADER, item(4, question_str=["what"])], "item 1 (question_id 4): 'question_str' must be a string, got list"),
    ([HEADER, item(4, question_tokens="what is it")], "item 1 (question_id 4): 'question_tokens' must be a list of strings"),
    ([HEADER, item(8), item(9), item(8)], "item 3 (question_id 8): question_id 8 appears twice (also item 1)"),
    ([HEADER], "the imdb holds no questions"),
])
def test_bad_imdb_items_get_one_line_naming_file_and_item(tmp_path, elements, message):
    path = write_imdb(tmp_path / "imdb_bad.npy", elements)
    # the same line whether training or scoring reads the file
    for read in (vqa.read_vqa_imdb, lambda p: D.read_vqa2_imdb(p, "val"), vqa.read_vqa_ground_truth):
        with pytest.raises(ValueError) as error:
            read(path)
        text = str(error.value)
        assert text.startswith(path + ": ") and message in text and "\n" not in text, text


def test_needed_fields_are_named_when_missing(tmp_path):
    path = write_imdb(tmp_path / "imdb_test2015.npy", [HEADER, item(1, answers=None), item(2, image_name=None)])
    with pytest.raises(ValueError, match=r"imdb_test2015.npy: item 1 \(question_id 1\) has neither 'answers' nor 'valid_answers'"):
        vqa.read_vqa_ground_truth(path)
    with pytest.raises(ValueError, match=r"imdb_test2015.npy: item 2 \(question_id 2\) has no 'image_name'"):
        D.read_vqa2_imdb(path, "test")
    # the test split needs no answers: question 1 reads, with answers None
    fine = write_imdb(tmp_path / "imdb_ok.npy", [HEADER, item(1, answers=None)])
    assert D.read_vqa2_imdb(fine, "test")[0]["answers"] is None


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_imdb_goes_through_the_restricted_unpickler(tmp_path):
    path = write_imdb(tmp_path / "evil.npy", [HEADER, _RunsCode()])
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        vqa.read_vqa_imdb(path)


# ---- NLVR2 ---------------------------------------------------------------------------------

def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_nlvr2_training_and_scoring_read_the_same_labels(tmp_path):
    path = write_lines(tmp_path / "dev.json", [
        {"identifier": "dev-1-0-0", "sentence": "a", "label": "True"},
        {"identifier": "dev-1-1-0", "sentence": "b", "label": "false"},
        "",
        {"identifier": "dev-2-0-1", "sentence": "c", "label": True},
    ])
    labels = nlvr2.read_nlvr2_labels(path)
    assert labels == {"dev-1-0-0": True, "dev-1-1-0": False, "dev-2-0-1": True}
    examples = D.read_nlvr2(path, "dev")
    assert {ex["identifier"]: ex["label"] for ex in examples} == {k: int(v) for k, v in labels.items()}
    assert examples[1]["image_keys"] == ("dev-1-1-img0.png", "dev-1-1-img1.png")


@pytest.mark.parametrize("rows, message", [
    ([{"identifier": "dev-1-0-0", "sentence": "a", "label": "True"}, '{"identifier": '], "dev.json:2: not a JSON object"),
    ([["dev-1-0-0", "a", "True"]], "dev.json:1: expected a JSON object, found list"),
    ([{"sentence": "a", "label": "True"}], "dev.json:1: no 'identifier' field"),
    ([{"identifier": 5, "sentence": "a", "label": "True"}], "dev.json:1: 'identifier' must be a string, got 5"),
    ([{"identifier": "dev-1-0-0", "label": "True"}], "dev.json:1: no 'sentence' field"),
    ([{"identifier": "dev1", "sentence": "a", "label": "True"}], "dev.json:1: NLVR2 identifier 'dev1' is not of the form"),
    ([{"identifier": "dev-1-0-0", "sentence": "a", "label": "maybe"}], "dev.json:1: label 'maybe' of dev-1-0-0 is not \"True\" or \"False\""),
    ([{"identifier": "dev-1-0-0", "sentence": "a"}], "dev.json:1: identifier dev-1-0-0 has no 'label'"),
    ([{"identifier": "dev-1-0-0", "sentence": "a", "label": "True"}] * 2,
     "dev.json:2: identifier dev-1-0-0 appears twice (also line 1)"),
    ([""], "dev.json: no examples"),
])
def test_bad_nlvr2_lines_get_one_line_naming_file_and_line(tmp_path, rows, message):
    path = write_lines(tmp_path / "dev.json", rows)
    for read in (nlvr2.read_nlvr2, lambda p: D.read_nlvr2(p, "dev"), nlvr2.read_nlvr2_labels):
        with pytest.raises(ValueError) as error:
            read(path)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_nlvr2_test2_needs_no_label(tmp_path):
    path = write_lines(tmp_path / "test2.json", [{"identifier": "test2-0-1-2", "sentence": "x"}])
    assert nlvr2.read_nlvr2(path, need_label=False) == [{"identifier": "test2-0-1-2", "sentence": "x", "label": None}]
    with pytest.raises(FileNotFoundError, match=r"absent.json: no such file \(expected an NLVR2 split"):
        nlvr2.read_nlvr2(tmp_path / "absent.json")


@pytest.mark.parametrize("identifier", ["dev-850-0", "dev-850-0-0-1", "dev-850-0-x", "dev--0-1", 7])
def test_one_nlvr2_identifier_parser_refuses_what_any_reader_refused(identifier):
    # the image names, the sentence key and the splits all parse the identifier the same way (a
    # three-field name used to give image names, a five-field one a sentence key)
    for parse in (nlvr2.parse_nlvr2_identifier, nlvr2.nlvr2_image_names, nlvr2.nlvr2_sentence_key):
        with pytest.raises(ValueError, match="is not of the form <split>-<set>-<pair>-<sentence>"):
            parse(identifier)


def test_nlvr2_identifier_gives_the_image_names_and_the_sentence():
    assert nlvr2.parse_nlvr2_identifier("test1-12-3-1") == ("test1", "12", "3", "1")
    assert nlvr2.nlvr2_image_names("test1-12-3-1") == ("test1-12-3-img0.png", "test1-12-3-img1.png")
    assert nlvr2.nlvr2_sentence_key("test1-12-3-1") == "test1-12--1"
    layout = FEATURE_TYPES["nlvr2_detectron_fix_144"]
    assert layout.split_of("test1-12-3-img1.png") == "test1"
    for key in ("test1-12-3-img2.png", "test1-12-img0.png", "dev"):  # the first field used to be taken as the split
        with pytest.raises(ValueError, match=f"NLVR2 image name '{key}' is not of the form"):
            layout.split_of(key)


def test_nlvr2_predictions_name_file_line_and_identifier(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("\ufeffdev-1-0-0, TRUE \ndev-1-1-0,false\n")
    assert nlvr2.read_nlvr2_predictions(path) == {"dev-1-0-0": True, "dev-1-1-0": False}
    # the label reader's words for a value that is neither
    path.write_text("dev-1-0-0,True\ndev-1-1-0,yes\n")
    with pytest.raises(ValueError, match=r"p\.csv:2: prediction 'yes' of dev-1-1-0 is not \"True\" or \"False\""):
        nlvr2.read_nlvr2_predictions(path)
    # an identifier the splits would refuse is refused here too, rather than reported as "not in the labels"
    path.write_text("dev-1-0-0,True\ndev-1-1,False\n")
    with pytest.raises(ValueError, match=r"p\.csv:2: NLVR2 identifier 'dev-1-1' is not of the form"):
        nlvr2.read_nlvr2_predictions(path)


# ---- VQA questions and annotations JSON ----------------------------------------------------------

def vqa_files(tmp_path, questions=None, annotations=None):
    questions = questions or [{"image_id": 7, "question": "what?", "question_id": 1},
                              {"image_id": 8, "question": "how many?", "question_id": 2}]
    annotations = annotations or [{"question_id": q["question_id"], "image_id": q["image_id"], "answer_type": "other",
                                   "question_type": "what", "answers": [{"answer": "dog"}] * 10} for q in questions]
    q, a = tmp_path / "q.json", tmp_path / "a.json"
    q.write_text(json.dumps({"questions": questions}))
    a.write_text(json.dumps({"annotations": annotations}))
    return str(q), str(a)


@pytest.mark.parametrize("change, message", [
    # what only training checked before: the scorer's questions file needed a question_id alone
    (lambda qs, anns: qs[1].update(image_id=9), "a.json: question_id 2 has image_id 8, "),
    (lambda qs, anns: qs[1].pop("image_id"), "q.json: questions entry 1 has no 'image_id'"),
    (lambda qs, anns: qs[1].update(question=None), 'q.json: question 1 (question_id 2): "question" must be the question text'),
    (lambda qs, anns: qs.append(dict(qs[0])), "q.json: question 2 (question_id 1): question_id 1 appears twice (also question 0)"),
    # what only scoring checked before: training did not look at the annotations' ids
    (lambda qs, anns: anns[1].update(question_id="2"), "a.json: annotation 1 (question_id 2): question_id must be an "
                                                       "integer, got '2'"),
    # new for both: a type that is not text would be a breakdown under a number
    (lambda qs, anns: anns[0].update(answer_type=3), 'a.json: annotation 0 (question_id 1): "answer_type" must be a string'),
    (lambda qs, anns: anns.pop(), "q.json does not match "),
])
def test_bad_vqa_json_is_the_same_line_for_training_and_scoring(tmp_path, change, message):
    q, a = vqa_files(tmp_path)
    qs, anns = json.load(open(q))["questions"], json.load(open(a))["annotations"]
    change(qs, anns)
    q, a = vqa_files(tmp_path, qs, anns)
    for read in (lambda: D.read_vqa_json(q, a), lambda: vqa.read_vqa_ground_truth(a, q)):
        with pytest.raises(ValueError) as error:
            read()
        assert message in str(error.value) and "\n" not in str(error.value)


def test_training_and_scoring_read_the_same_answers_from_vqa_json(tmp_path):
    q, a = vqa_files(tmp_path)
    truth = vqa.read_vqa_ground_truth(a, q)
    examples = D.read_vqa_json(q, a)
    assert {ex["question_id"]: (ex["answers"], ex["question_str"]) for ex in examples} == {
        qid: (gt["answers"], gt["question"]) for qid, gt in truth.items()}
    # one's own annotations may leave out the image and the types: no breakdown, same answers
    q, a = vqa_files(tmp_path, annotations=[{"question_id": 1, "answers": [{"answer": "cat"}]},
                                            {"question_id": 2, "answers": [{"answer": "2"}]}])
    assert vqa.read_vqa_ground_truth(a, q)[1] == {"answers": ["cat"], "answer_type": None, "question_type": None,
                                                  "question": "what?"}
    assert D.read_vqa_json(q, a)[1]["answers"] == ["2"]


# ---- JSON with one line of error, ids -------------------------------------------------------------

def test_read_json_names_the_file_the_place_and_what_was_expected(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": 1,\n  "b": }')
    with pytest.raises(ValueError) as error:
        common.read_json(path, "a thing")
    assert str(error.value) == f"{path}: not valid JSON (Expecting value at line 2 column 8); expected a thing"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=r"x.json: not valid JSON \(not UTF-8 text: byte 0xff at offset 7\); expected"):
        common.read_json(path, "a thing")
    with pytest.raises(FileNotFoundError, match=r"nope.json: no such file \(expected a thing\)"):
        common.read_json(tmp_path / "nope.json", "a thing")
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')  # a byte-order mark, as spreadsheets and some editors write
    assert common.read_json(path, "a thing") == {"a": 1}


def test_coco_captions_ids_are_integers_and_unique(tmp_path):
    path = tmp_path / "captions_val2014.json"
    good = [{"id": 2, "image_id": 25, "caption": " b "}, {"id": 1, "image_id": 9, "caption": "a"}]
    path.write_text(json.dumps({"images": [], "annotations": good}))
    assert coco.read_coco_captions(path) == [{"caption_id": 1, "image_id": 9, "caption": "a"},
                                             {"caption_id": 2, "image_id": 25, "caption": "b"}]
    for annotations, message in (
            (good + [{"id": 3, "image_id": "9", "caption": "c"}], "annotation 2 (id 3): image_id must be an integer, got '9'"),
            (good + [dict(good[0])], "annotation 2 (id 2): id 2 appears twice (also annotation 0)"),
            (good + [{"id": 3, "image_id": 9}], "annotation 2 has no 'caption'"),
            ([["a"]], "annotation 0 is a list, expected an object")):
        path.write_text(json.dumps({"annotations": annotations}))
        with pytest.raises(ValueError) as error:
            coco.read_coco_captions(path)
        assert str(error.value) == f"{path}: {message}"
    path.write_text(json.dumps(["a caption"]))
    with pytest.raises(ValueError, match='not a COCO caption file \\(expected a JSON object with an "annotations" list'):
        coco.read_coco_captions(path)
