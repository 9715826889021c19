"""VCR readers and the item -> input rules, against items worked out by hand."""
import json

import numpy as np
import pytest

from visualbert import vcr_inputs
from visualbert.formats import vcr as vcr_format
from visualbert.inputs import get_tokenizer

ITEM = {
    "annot_id": "val-0", "movie": "m", "objects": ["person", "person", "car", "person", "dog"],
    "img_fn": "m/a.jpg", "metadata_fn": "m/a.json",
    "question": ["Why", "is", [1], "near", "the", [2], "?"],
    "answer_choices": [[[1, 0], "are", "waiting", "."], ["Because", [3], "drives", "."],
                       ["No", "reason", "."], ["The", [2], "is", "red", "."]],
    "rationale_choices": [["Everyone", "is", "there", "."], ["It", "rains", "."], ["Yes", "."], ["No", "."]],
    "answer_label": 0, "rationale_label": 1,
}


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return str(path)


def test_object_indices_become_names_and_class_words_as_the_original():
    words, refs, names = vcr_inputs.render(ITEM["question"], ITEM["objects"])
    assert words == ["Why", "is", "Casey", "near", "the", "car", "?"]
    assert refs == [-1, -1, 1, -1, -1, 2, -1]
    # Several indices: one word each, no "and". Person 1 keeps the context's name; person 0 is
    # new in this choice and, as the original counts new people from 0 per sentence, is Casey too.
    words, refs, _ = vcr_inputs.render(ITEM["answer_choices"][0], ITEM["objects"], names)
    assert words == ["Casey", "Casey", "are", "waiting", "."] and refs == [1, 0, -1, -1, -1]
    words, _, _ = vcr_inputs.render([[3], "and", [0], "and", [4]], ITEM["objects"])
    assert words == ["Casey", "and", "Riley", "and", "dog"]


def test_rationale_context_is_question_then_the_chosen_answer():
    context, choices = vcr_inputs.render_example(ITEM, "rationale", answer=1)
    assert context[0] == ["Why", "is", "Casey", "near", "the", "car", "?", "Because", "Riley", "drives", "."]
    assert [c[0] for c in choices][0] == ["Everyone", "is", "there", "."]
    context, _ = vcr_inputs.render_example(ITEM, "rationale")  # labelled answer 0
    assert context[0][-4:] == ["Casey", "Riley", "are", "waiting", "."][-4:]


def test_kept_detections_are_the_referenced_ones_and_everyone_means_all_people():
    assert vcr_inputs.kept_objects(ITEM).tolist() == [0, 1, 2, 3]  # "Everyone" adds person 0 and 3
    quiet = dict(ITEM, rationale_choices=[["a"]] * 4)
    assert vcr_inputs.kept_objects(quiet).tolist() == [0, 1, 2, 3]
    only_dog = dict(ITEM, question=["a", [4]], answer_choices=[["b"]] * 4, rationale_choices=[["c"]] * 4)
    assert vcr_inputs.kept_objects(only_dog).tolist() == [4]
    nothing = dict(only_dog, question=["a"])
    assert vcr_inputs.kept_objects(nothing).tolist() == [0, 1, 3]  # no reference: all people
    assert vcr_inputs.class_ids(ITEM, [0, 2, 4]).tolist() == [0, 1, 3, 17]  # image, person, car, dog (r2c's order)


def test_each_box_is_aligned_to_the_word_pieces_that_name_it():
    tokenizer = get_tokenizer()
    objects = ["person", "pottedplant"]
    context = vcr_inputs.render(["is", [0], "watering", "the", [1], "?"], objects)
    choice = vcr_inputs.render(["yes", ",", [0], "is", "."], objects, context[2])
    box_of_object = {0: 1, 1: 2}  # box 0 is the whole image
    ids, types, alignment = vcr_inputs.encode_pair(tokenizer, context[:2], choice[:2], box_of_object, 3)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert tokens == ["[CLS]", "is", "casey", "watering", "the", "pot", "##ted", "##pl", "##ant", "?",
                      "[SEP]", "yes", ",", "casey", "is", ".", "[SEP]"]
    assert types.tolist() == [0] * 11 + [1] * 6
    assert alignment == [[], [2, 13], [5, 6, 7, 8]]


def test_too_long_pairs_lose_the_start_of_the_choice():
    tokenizer = get_tokenizer()
    context = (["a", "b", "c"], [-1, -1, -1])
    choice = (["d", "e", "f", "g"], [-1, -1, 0, -1])
    ids, _, alignment = vcr_inputs.encode_pair(tokenizer, context, choice, {0: 1}, 2, max_seq_length=8)
    assert tokenizer.convert_ids_to_tokens(ids.tolist()) == ["[CLS]", "a", "b", "c", "[SEP]", "f", "g", "[SEP]"]
    assert alignment == [[], [5]]


def test_masks_mark_grid_points_inside_the_polygons():
    # Box 0..14 x 0..14: grid points at 0.5, 1.5, ...; the triangle covers the left half's points.
    masks = vcr_inputs.object_masks([[0, 0, 14, 14, 1.0]], [[[[0, 0], [7, 0], [7, 14], [0, 14]]]])
    expected = np.zeros((14, 14), dtype=np.float32)
    expected[:, :7] = 1
    np.testing.assert_array_equal(masks[0], expected)


def test_image_is_scaled_to_fit_and_centred_boxes_move_with_it():
    from PIL import Image

    image = Image.new("RGB", (200, 50), (255, 255, 255))
    pixels, boxes = vcr_inputs.prepare_image(image, [[0, 0, 100, 50]], image_size=(40, 20))
    # scale min(40/200, 20/50) = 0.2 -> 40 x 10, padded 5 rows above and below.
    assert pixels.shape == (3, 20, 40)
    np.testing.assert_allclose(boxes, [[0, 5, 40, 15], [0, 5, 20, 15]])
    white = (1 - vcr_inputs.IMAGENET_MEAN) / vcr_inputs.IMAGENET_STD
    np.testing.assert_allclose(pixels[:, 10, 3], white, rtol=1e-5)
    np.testing.assert_allclose(pixels[:, 0, 3], -vcr_inputs.IMAGENET_MEAN / vcr_inputs.IMAGENET_STD, rtol=1e-5)


def test_reader_keeps_items_and_test_split_may_lack_labels(tmp_path):
    items = vcr_format.read_vcr(write_jsonl(tmp_path / "val.jsonl", [ITEM]))
    assert items[0]["answer_label"] == 0 and items[0]["question"] == ITEM["question"]
    unlabelled = {k: v for k, v in ITEM.items() if not k.endswith("_label")}
    path = write_jsonl(tmp_path / "test.jsonl", [unlabelled])
    assert vcr_format.read_vcr(path, need_labels=False)[0]["answer_label"] is None
    with pytest.raises(ValueError, match=r"test.jsonl:1 \(annot_id val-0\): no 'answer_label'"):
        vcr_format.read_vcr(path)


@pytest.mark.parametrize("line, message", [
    ("{not json", r"bad.jsonl:2: not a JSON object"),
    (json.dumps(dict(ITEM, annot_id="x", question=["a", [9]])), r"bad.jsonl:2 \(annot_id x\): 'question' token \[9\]"),
    (json.dumps(dict(ITEM, annot_id="x", answer_choices=[["a"]] * 3)), r"bad.jsonl:2 .*4 token lists"),
    (json.dumps(dict(ITEM, annot_id="x", answer_label=4)), r"bad.jsonl:2 .*'answer_label' must be an integer 0..3"),
    (json.dumps(dict(ITEM, annot_id="x", objects=["unicorn"])), r"bad.jsonl:2 .*'unicorn'"),
    (json.dumps(ITEM), r"bad.jsonl:2: annot_id val-0 appears twice \(also line 1\)"),
])
def test_a_malformed_line_is_one_error_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ITEM) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        vcr_format.read_vcr(path)


def test_metadata_reader_and_its_errors(tmp_path):
    good = {"boxes": [[1, 2, 30, 40, 0.9]], "segms": [[[[1, 2], [30, 2], [30, 40]]]], "width": 50, "height": 60,
            "names": ["person"]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(good))
    meta = vcr_format.read_vcr_metadata(path, num_objects=1)
    assert meta["boxes"].shape == (1, 5) and meta["width"] == 50
    with pytest.raises(ValueError, match=r"a.json: 1 boxes, but the item names 2 objects"):
        vcr_format.read_vcr_metadata(path, num_objects=2)
    path.write_text('{"boxes": [\n  [1, 2,\n  }')
    with pytest.raises(ValueError, match=r"a.json: not valid JSON \(.* at line 3 column 3\); expected a VCR image metadata JSON"):
        vcr_format.read_vcr_metadata(path)
    path.write_text(json.dumps(dict(good, boxes=[[5, 2, 3, 40, 0.9]])))
    with pytest.raises(ValueError, match=r"a.json: boxes\[0\] .* is not a box"):
        vcr_format.read_vcr_metadata(path)
    path.write_text(json.dumps(dict(good, segms=[[[[1, 2]]]])))
    with pytest.raises(ValueError, match=r"a.json: segms\[0\] must be a list of polygons"):
        vcr_format.read_vcr_metadata(path)
