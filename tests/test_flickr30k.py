"""Flickr30K Entities: the release's formats, IoU targets, R@K, the scripts end to end."""
import json
import os
import re

import numpy as np
import pytest

from conftest import run_script
from helpers import question_files
from visualbert import evaluate, metrics
from visualbert.formats import flickr30k as flickr30k_format
from visualbert.features import PackWriter, open_feature_dir

REAL_CAPTION = ("[/EN#18/people A child] in [/EN#19/clothing a pink dress] is climbing up [/EN#20/other a set of "
                "stairs] in [/EN#21/scene an entry way] .")

XML = """<annotation>
<folder>flickr30k_images</folder>
<filename>42.jpg</filename>
<source><database>Flickr30k</database></source>
<size><width>200</width><height>100</height><depth>3</depth></size>
<object><name>1</name><name>3</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>
<object><name>1</name><bndbox><xmin>100</xmin><ymin>20</ymin><xmax>140</xmax><ymax>90</ymax></bndbox></object>
<object><name>2</name><nobndbox>1</nobndbox></object>
<object><name>4</name><nobndbox>1</nobndbox><scene>1</scene></object>
</annotation>
"""


def write_release(root, captions, xml=XML, image_id="42", split="test"):
    for sub in ("Sentences", "Annotations"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, "Sentences", f"{image_id}.txt"), "w") as f:
        f.write("\n".join(captions) + "\n")
    with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
        f.write(xml)
    with open(os.path.join(root, f"{split}.txt"), "w") as f:
        f.write(image_id + "\n")
    return str(root)


def write_store(path, rows_by_key, boxes_by_key=None):
    """A packed store; boxes in normalised x1, y1, x2, y2 (w, h added as the stores keep them)."""
    extras = {"boxes": 6} if boxes_by_key else None
    with PackWriter(str(path), {"test": True}, dtype="float32", extras=extras) as writer:
        for key, rows in rows_by_key.items():
            kw = {}
            if boxes_by_key:
                b = np.asarray(boxes_by_key[key], dtype=np.float32)
                kw["boxes"] = np.concatenate([b, b[:, 2:] - b[:, :2]], 1)
            writer.add(key, np.asarray(rows, dtype=np.float32), **kw)
        writer.finish()
    return str(path)


# ---------------------------------------------------------------------------- the release's formats


def test_real_caption_line_gives_phrases_with_word_and_character_spans():
    caption = flickr30k_format.parse_flickr30k_caption(REAL_CAPTION, "x.txt:1")
    assert caption["sentence"] == "A child in a pink dress is climbing up a set of stairs in an entry way ."
    got = [(p["entity_id"], p["types"], p["text"], p["first_word"], p["last_word"]) for p in caption["phrases"]]
    assert got == [(18, ["people"], "A child", 0, 1), (19, ["clothing"], "a pink dress", 3, 5),
                   (20, ["other"], "a set of stairs", 9, 12), (21, ["scene"], "an entry way", 14, 16)]
    for p in caption["phrases"]:
        assert caption["sentence"][p["start"]:p["end"]] == p["text"]


def test_odd_markup_several_types_nesting_and_bracket_inside_a_word():
    caption = flickr30k_format.parse_flickr30k_caption(
        "[/EN#7/people/other [/EN#8/bodyparts her] friend]'s [/EN#0/notvisual it] [/EN#9/other  ball ] !", "x:1")
    assert caption["words"] == ["her", "friend's", "it", "ball", "!"]
    outer, inner, notvisual, ball = caption["phrases"]
    assert (outer["entity_id"], outer["types"], outer["text"]) == (7, ["people", "other"], "her friend's")
    assert (inner["entity_id"], inner["text"], inner["last_word"]) == (8, "her", 0)
    assert (notvisual["entity_id"], notvisual["text"]) == (0, "it")
    assert (ball["text"], ball["first_word"], ball["last_word"]) == ("ball", 3, 3)


@pytest.mark.parametrize("line, message", [
    ("[/EN#1/people a man is here .", "phrase of entity 1 is not closed"),
    ("a man] is here .", "']' closes no phrase"),
    ("[/EN#1/people ] is here .", "phrase of entity 1 has no words"),
    ("[/EN#x/people a man] .", "malformed phrase markup '[/EN#x/people'"),
    ("[/EN#1/people]a man] .", "not followed by a space"),
])
def test_malformed_caption_line_is_one_error_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "42.txt"
    path.write_text(REAL_CAPTION + "\n" + line + "\n")
    with pytest.raises(ValueError) as e:
        flickr30k_format.read_flickr30k_sentences(path)
    assert str(e.value).startswith(f"{path}:2: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_xml_boxes_shared_and_several_per_entity_nobox_and_scene(tmp_path):
    path = tmp_path / "42.xml"
    path.write_text(XML)
    got = flickr30k_format.read_flickr30k_boxes(path)
    assert (got["width"], got["height"]) == (200, 100)
    assert got["boxes"] == {1: [[10, 10, 50, 60], [100, 20, 140, 90]], 3: [[10, 10, 50, 60]]}
    assert got["nobox"] == {2} and got["scene"] == {4}


@pytest.mark.parametrize("xml, line, message", [
    (XML.replace("</annotation>", ""), 11, "not well-formed XML"),
    (XML.replace("<xmax>50</xmax>", "<xmax>fifty</xmax>"), 6, "<xmax> 'fifty' is not a number"),
    (XML.replace("<name>2</name>", "<name>two</name>"), 8, "entity id 'two' is not a number"),
    (XML.replace("<xmin>100</xmin>", "<xmin>150</xmin>"), 7, "has no area"),
])
def test_malformed_xml_is_one_error_naming_file_and_line(tmp_path, xml, line, message):
    path = tmp_path / "42.xml"
    path.write_text(xml)
    with pytest.raises(ValueError) as e:
        flickr30k_format.read_flickr30k_boxes(path)
    assert str(e.value).startswith(f"{path}:{line}: ") and message in str(e.value)


def test_phrases_without_a_box_are_left_out_and_counted(tmp_path):
    root = write_release(tmp_path, [
        "[/EN#1/people A man] and [/EN#2/people a woman] in [/EN#4/scene a park] with [/EN#3/other a dog] .",
        "[/EN#0/notvisual Nobody] sees [/EN#4/scene the park] .",
    ])
    examples, summary = flickr30k_format.read_flickr30k(root, ["42"])
    assert len(examples) == 1  # the second caption has no boxed phrase
    kept = [(p["entity_id"], p["phrase_index"]) for p in examples[0]["phrases"]]
    assert kept == [(1, 0), (3, 3)]
    assert examples[0]["phrases"][0]["boxes"] == [[10, 10, 50, 60], [100, 20, 140, 90]]
    assert summary["left_out"] == {"people": 1, "scene": 2, "notvisual": 1}
    assert (summary["images"], summary["captions"], summary["phrases"]) == (1, 1, 2)


def test_image_list_with_a_bad_line_names_it(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("42\n\n43 44\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: '43 44' is not an image id$"):
        flickr30k_format.read_flickr30k_image_list(path)


# ---------------------------------------------------------------------------- IoU, targets, R@K


def test_iou_by_hand():
    # [0,0,2,2] and [1,1,3,3] overlap in a unit square: 1 / (4 + 4 - 1); touching boxes do not overlap
    iou = metrics.box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [0, 0, 2, 1]])
    assert np.allclose(iou, [[1 / 7, 1.0, 0.0, 0.5]])
    # scaling both sides per axis (pixels -> normalised) leaves it unchanged
    assert np.allclose(metrics.box_iou([[0, 0, 0.02, 0.2]], [[0.01, 0.1, 0.03, 0.3]]), 1 / 7)


def grounding_dataset(tmp_path, captions, detections, spatial=False):
    from visualbert.grounding import GroundingDataset
    from visualbert.inputs import get_tokenizer

    root = write_release(tmp_path / "release", captions)
    examples, _ = flickr30k_format.read_flickr30k(root, ["42"])
    rows = np.arange(len(detections) * 4, dtype=np.float32).reshape(len(detections), 4)
    store = write_store(tmp_path / "store", {"42": rows}, {"42": detections})
    return GroundingDataset(examples, get_tokenizer(), open_feature_dir(store), spatial=spatial)


def test_query_position_and_uniform_targets_over_boxes_with_iou_at_least_half(tmp_path):
    # image 200 x 100; entity 1's boxes are [10,10,50,60] and [100,20,140,90] (pixels)
    detections = [
        [10 / 200, 10 / 100, 50 / 200, 60 / 100],   # entity 1's first box itself: IoU 1
        [100 / 200, 20 / 100, 140 / 200, 80 / 100],  # 40x60 inside its 40x70 second box: IoU 6/7
        [0.9, 0.9, 1.0, 1.0],                         # nowhere near: IoU 0
        [10 / 200, 10 / 100, 50 / 200, 30 / 100],   # 40x20 inside the 40x50 first box: IoU 0.4 < 0.5
    ]
    ds = grounding_dataset(tmp_path, ["[/EN#1/people The skateboarding man] near [/EN#3/other a dog] ."], detections)
    item = ds[0]
    # [CLS] the skate ##boarding man near a dog . [SEP]: "man" is at 4, "dog" at 7 (word pieces + [CLS])
    tokens = ds.text.tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert tokens[:5] == ["[CLS]", "the", "skate", "##boarding", "man"]
    assert item["region_to_phrase_position"].tolist() == [4, 7]
    assert tokens[4] == "man" and tokens[7] == "dog"
    assert np.allclose(item["labels"][0], [0.5, 0.5, 0.0, 0.0])  # two boxes at IoU >= 0.5
    assert np.allclose(item["labels"][1], [1.0, 0.0, 0.0, 0.0])  # entity 3 shares the first box


def test_phrase_without_a_matching_detection_has_no_target(tmp_path):
    ds = grounding_dataset(tmp_path, ["[/EN#3/other A dog] ."], [[0.9, 0.9, 1.0, 1.0], [0.0, 0.0, 0.1, 0.1]])
    assert ds[0]["labels"].tolist() == [[0.0, 0.0]]  # kept (counts for the upper bound), no loss


def test_phrase_past_max_seq_length_is_one_line_naming_the_caption(tmp_path):
    from visualbert.grounding import GroundingDataset
    from visualbert.inputs import get_tokenizer

    root = write_release(tmp_path / "release", ["A man sits with [/EN#3/other a dog] ."])
    examples, _ = flickr30k_format.read_flickr30k(root, ["42"])
    store = open_feature_dir(write_store(tmp_path / "store", {"42": np.ones((1, 4))}, {"42": [[0, 0, 1, 1]]}))
    with pytest.raises(ValueError, match=r"^caption 0 of image 42 has a phrase ending at word piece 6, past "
                                         r"--max_seq_length 6$"):
        GroundingDataset(examples, get_tokenizer(), store, max_seq_length=6)
    without_boxes = open_feature_dir(write_store(tmp_path / "plain", {"42": np.ones((1, 4))}))
    with pytest.raises(ValueError, match="phrase grounding needs each region's box, but this store keeps none"):
        GroundingDataset(examples, get_tokenizer(), without_boxes)


def test_collator_pads_phrases_and_regions(tmp_path):
    ds = grounding_dataset(tmp_path, ["[/EN#1/people A man] and [/EN#3/other a dog] .", "[/EN#3/other A dog] ."],
                           [[0.05, 0.1, 0.25, 0.6], [0.5, 0.2, 0.7, 0.9]])
    batch = ds.collate_fn()([ds[0], ds[1]])
    assert batch["region_to_phrase_position"].tolist() == [[2, 5], [2, -1]]
    assert batch["labels"].shape == (2, 2, 2) and batch["labels"][1, 1].tolist() == [0.0, 0.0]


def test_recall_at_k_by_hand():
    phrases = [
        (["people"], [True, False, False]),         # right at 1
        (["people", "clothing"], [False, False, True]),  # right at 3
        (["animals"], [False, False, False]),     # no box could ground it
        (["animals"], [False] * 6 + [True]),      # right at 7
    ]
    scores = metrics.grounding_recall(phrases, ks=(1, 5, 10))
    assert scores["overall"] == {"R@1": 25.0, "R@5": 50.0, "R@10": 75.0, "upper_bound": 75.0, "phrases": 4}
    assert scores["per_type"]["people"] == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "upper_bound": 100.0,
                                            "phrases": 2}
    assert scores["per_type"]["clothing"]["R@1"] == 0.0 and scores["per_type"]["animals"]["upper_bound"] == 50.0


def test_evaluate_flickr30k_scores_ranked_boxes_against_the_annotations(tmp_path):
    root = write_release(tmp_path, ["[/EN#1/people A man] with [/EN#3/other a dog] ."])
    predictions = tmp_path / "p.json"
    predictions.write_text(json.dumps([
        {"image_id": "42", "caption_index": 0, "phrase_index": 0, "boxes": [[0, 0, 5, 5], [101, 21, 140, 90]]},
        {"image_id": "42", "caption_index": 0, "phrase_index": 1, "boxes": [[100, 20, 140, 90]]},
    ]))
    scores = evaluate.evaluate_flickr30k(str(predictions), root, split="test", draw=str(tmp_path / "draw"),
                                         draw_count=1)
    assert scores["overall"] == {"R@1": 0.0, "R@5": 50.0, "R@10": 50.0, "upper_bound": 50.0, "phrases": 2}
    assert scores["drawn"] == [str(tmp_path / "draw" / "42_0_0.png")] and os.path.getsize(scores["drawn"][0]) > 0
    predictions.write_text(json.dumps([{"image_id": "42", "caption_index": 0, "phrase_index": 0, "boxes": []}]))
    proc = run_script(["-m", "visualbert.evaluate", "flickr30k", "--predictions", str(predictions),
                       "--annotation_dir", root], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {predictions} does not match {root}: 1 phrases (image, caption, phrase) missing from the "
        "predictions (e.g. ('42', 0, 1))"]


# ---------------------------------------------------------------------------- box geometry as a model input


def test_spatial_features_append_the_stores_geometry(tmp_path):
    detections = [[0.05, 0.1, 0.25, 0.6], [0.5, 0.2, 0.7, 0.9]]
    item = grounding_dataset(tmp_path, ["[/EN#1/people A man] ."], detections, spatial=True)[0]
    assert item["visual_embeds"].shape == (2, 4 + 6)
    assert np.allclose(item["visual_embeds"][:, :4], [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert np.allclose(item["visual_embeds"][:, 4:], [[0.05, 0.1, 0.25, 0.6, 0.2, 0.5], [0.5, 0.2, 0.7, 0.9, 0.2, 0.7]])


def test_spatial_features_on_for_configs_on_stores_with_boxes_and_as_a_checkpoint_says(tmp_path, tiny_config):
    from visualbert import pretrained
    from visualbert.modeling import VisualBertForRegionToPhraseAlignment

    boxed = open_feature_dir(write_store(tmp_path / "boxed", {"a": np.ones((2, 8))}, {"a": [[0, 0, 1, 1]] * 2}))
    plain = open_feature_dir(write_store(tmp_path / "plain", {"a": np.ones((2, 8))}))
    config = tiny_config()
    assert pretrained.uses_spatial_features(config, boxed) is True
    assert pretrained.uses_spatial_features(config, plain) is False
    off = tmp_path / "off.json"
    off.write_text(json.dumps(dict(json.loads(open(config).read()), add_spatial_features=False)))
    assert pretrained.uses_spatial_features(str(off), boxed) is False

    model, spatial = pretrained.load_task_model(VisualBertForRegionToPhraseAlignment, config, boxed)
    assert spatial and model.config.visual_embedding_dim == 8 + 6 and model.config.add_spatial_features
    model.save_pretrained(str(tmp_path / "trained"))
    reloaded, spatial = pretrained.load_task_model(VisualBertForRegionToPhraseAlignment, str(tmp_path / "trained"), boxed,
                                                new_head=False)
    assert spatial and reloaded.config.visual_embedding_dim == 14
    with pytest.raises(SystemExit, match="takes each region's box geometry .* keeps none"):
        pretrained.uses_spatial_features(str(tmp_path / "trained"), plain)

    fresh, _ = pretrained.load_task_model(VisualBertForRegionToPhraseAlignment, str(off), boxed)
    fresh.save_pretrained(str(tmp_path / "no-boxes"))  # as a released checkpoint: no add_spatial_features
    assert pretrained.uses_spatial_features(str(tmp_path / "no-boxes"), boxed) is False
    # a checkpoint whose projection takes the features plus the 6 box values (a BERT converted with
    # --visual_embedding_dim D + 6) gets them, though its config does not say add_spatial_features
    bert = tmp_path / "bert.json"
    bert.write_text(json.dumps(dict(json.loads(open(config).read()), add_spatial_features=False,
                                    visual_embedding_dim=14)))
    VisualBertForRegionToPhraseAlignment(pretrained._read_config(str(bert))).save_pretrained(str(tmp_path / "bert"))
    assert pretrained.uses_spatial_features(str(tmp_path / "bert"), boxed) is True


def test_coco_keys_find_the_bare_image_ids_of_imported_coco_features(tmp_path):
    store = open_feature_dir(write_store(tmp_path / "coco", {"9": np.ones((2, 4)), "42": np.zeros((3, 4))}))
    assert "COCO_train2014_000000000009" in store and "COCO_val2014_000000000042" in store
    assert store.get("COCO_val2014_000000000042").shape == (3, 4) and "COCO_val2014_000000000043" not in store


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_demo_release_trains_predicts_and_scores_far_above_chance(tmp_path, tiny_config):
    from visualbert.demo_flickr30k import DETECTIONS, write_flickr30k

    data = write_flickr30k(str(tmp_path), seed=0, splits={"train": 60, "val": 10, "test": 20})
    store = str(tmp_path / "feats")
    run_script(["-m", "visualbert.features", "import", "--format", "butd_tsv", "--src", data["tsv"],
                "--output_dir", store])
    common = ["--annotation_dir", data["annotation_dir"], "--features", store, "--device", "cpu", "--num_workers", "0"]
    run_script(["Flickr30K/run_flickr30k.py", *common, "--model_name_or_path", tiny_config(dropout=0.0),
                "--output_dir", str(tmp_path / "run"), "--batch_size", "16", "--learning_rate", "2e-3",
                "--num_train_epochs", "6", "--eval_split", "none", "--logging_steps", "10"])
    predictions = str(tmp_path / "p.json")
    proc = run_script(["Flickr30K/run_predict.py", *common, "--model_name_or_path", str(tmp_path / "run"),
                       "--output", predictions])
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    scored = evaluate.evaluate_flickr30k(predictions, data["annotation_dir"], split="test")
    assert printed["R@1"] == scored["overall"]["R@1"] > 50.0 > 100 / DETECTIONS * 3
    assert scored["overall"]["upper_bound"] < 100.0  # the demo's detector misses some objects
    assert scored["left_out_phrases"]["scene"] == 2 * 20  # every caption's box-less scene phrase


# ---------------------------------------------------------------------------- the original code's feature files


def write_original_h5(tmp_path, table_bytes=None):
    """test.hdf5 + test_imgid2idx.pkl as the original code's Flickr30K data: two images, 3 and 2 boxes."""
    import pickle

    import h5py

    rng = np.random.default_rng(0)
    features = rng.standard_normal((5, 8)).astype(np.float32)
    spatial = rng.uniform(0, 1, (5, 6)).astype(np.float32)
    with h5py.File(tmp_path / "test.hdf5", "w") as f:
        f["image_features"] = features
        f["spatial_features"] = spatial
        f["image_bb"] = spatial[:, :4] * 100
        f["pos_boxes"] = np.array([[3, 5], [0, 3]])
    (tmp_path / "test_imgid2idx.pkl").write_bytes(table_bytes or pickle.dumps({1000092795: 1, 10002456: 0}))
    return str(tmp_path / "test.hdf5"), features, spatial


def test_original_hdf5_and_imgid2idx_import_with_geometry(tmp_path):
    from visualbert.features.importers import import_features

    src, features, spatial = write_original_h5(tmp_path)
    out, corrupt = import_features("h5", [src], str(tmp_path / "store"), dtype="float32", progress=False)
    assert corrupt == []
    store = open_feature_dir(out)
    assert sorted(store.keys()) == ["1000092795", "10002456"] and store.has_boxes
    assert np.allclose(store.get("1000092795"), features[:3]) and np.allclose(store.boxes("1000092795"), spatial[:3])
    assert np.allclose(store.get("10002456"), features[3:]) and np.allclose(store.boxes("10002456"), spatial[3:])


def test_stored_geometry_is_checked_when_imported_and_when_read(tmp_path):
    """One check for geometry taken as a release stores it and for geometry read back from a store."""
    import h5py

    from visualbert.features.importers import import_features

    src, _, spatial = write_original_h5(tmp_path)
    with h5py.File(src, "r+") as f:
        f["spatial_features"][4, 1] = np.nan  # the second box of image 10002456 (pos_boxes[0]: rows 3..5)
    out, corrupt = import_features("h5", [src], str(tmp_path / "refused"), progress=False, log=lambda _: None)
    assert out is None and corrupt == [f"{src}:pos_boxes[0] (image id 10002456) spatial_features: the box geometry "
                                       "contains NaN or Inf (extract or import the store again)"]

    with h5py.File(src, "r+") as f:
        f["spatial_features"][4, 1] = 0.5
    out, _ = import_features("h5", [src], str(tmp_path / "store"), dtype="float32", progress=False)
    store = open_feature_dir(out)
    boxes = np.memmap(os.path.join(out, "boxes.bin"), dtype=np.float32, mode="r+")
    boxes[store.store.index["1000092795"][0] * 6] = np.inf
    boxes.flush()
    del boxes
    with pytest.raises(ValueError, match=re.escape(os.path.join(out, "boxes.bin")) + ": the box geometry of image "
                       "'1000092795' contains NaN or Inf"):
        open_feature_dir(out).boxes("1000092795")
    assert np.allclose(open_feature_dir(out).boxes("10002456")[1], [spatial[4, 0], 0.5, *spatial[4, 2:]])


def test_imgid2idx_pickle_goes_through_the_restricted_unpickler(tmp_path):
    payload = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    src, _, _ = write_original_h5(tmp_path, table_bytes=payload)
    proc = run_script(["-m", "visualbert.features", "import", "--format", "h5", "--src", src,
                       "--output_dir", str(tmp_path / "store")], check=False)
    assert proc.returncode != 0 and not (tmp_path / "pwned").exists() and not (tmp_path / "store").exists()
    assert "test_imgid2idx.pkl: not a readable image id table (UnsafePickleError" in proc.stderr
    assert "refusing to load 'os.system'" in proc.stderr


@pytest.mark.slow
def test_paper_recipe_coco_caption_pretraining_on_an_imported_store_then_grounding(demo_dir, tiny_config, tmp_path):
    """COCO captions over bottom-up-attention-style features keyed by bare image ids, from a checkpoint
    sized for the features + 6 box values (as a BERT converted with --visual_embedding_dim 2054), then Flickr30K."""
    from visualbert import pretrained
    from visualbert.demo_flickr30k import write_flickr30k
    from visualbert.modeling import VisualBertForPreTraining

    captions = demo_dir / "X_COCO" / "annotations"
    ids = {a["image_id"] for split in ("train2014", "val2014")
           for a in json.loads((captions / f"captions_{split}.json").read_text())["annotations"]}
    rng = np.random.default_rng(0)
    store = write_store(tmp_path / "coco", {str(i): rng.standard_normal((3, 32)) for i in sorted(ids)},
                        {str(i): [[0.1, 0.1, 0.5, 0.5], [0.2, 0.3, 0.9, 0.8], [0, 0, 1, 1]] for i in sorted(ids)})
    config = json.loads(open(tiny_config(0.0)).read())
    start = tmp_path / "start.json"
    start.write_text(json.dumps(dict(config, visual_embedding_dim=32 + 6)))
    VisualBertForPreTraining(pretrained._read_config(str(start))).save_pretrained(str(tmp_path / "bert"))
    fast = ["--device", "cpu", "--num_workers", "0", "--seed", "1", "--max_steps", "2", "--logging_steps", "1"]
    run_script(["run_pretrain.py", "--dataset", "coco_captions", "--features", store, "--annotation_dir", str(captions),
                "--model_name_or_path", str(tmp_path / "bert"), "--output_dir", str(tmp_path / "pre"),
                "--train_batch_size", "8", "--max_eval_samples", "16", *fast])
    saved = json.loads((tmp_path / "pre" / "model" / "config.json").read_text())
    assert saved["add_spatial_features"] is True and saved["visual_embedding_dim"] == 38

    data = write_flickr30k(str(tmp_path / "flickr"), seed=0, splits={"train": 8, "val": 4})
    flickr_store = str(tmp_path / "flickr_feats")
    run_script(["-m", "visualbert.features", "import", "--format", "butd_tsv", "--src", data["tsv"],
                "--output_dir", flickr_store])
    # the demo's Flickr30K features are 32-d too, so the pretrained model fine-tunes on them
    run_script(["Flickr30K/run_flickr30k.py", "--annotation_dir", data["annotation_dir"], "--features", flickr_store,
                "--model_name_or_path", str(tmp_path / "pre"), "--output_dir", str(tmp_path / "ground"),
                "--batch_size", "4", *fast])
    assert json.loads((tmp_path / "ground" / "model" / "config.json").read_text())["add_spatial_features"] is True


@pytest.mark.slow
def test_vqa_trained_from_a_config_on_a_boxed_store_records_and_uses_the_geometry(tmp_path, tiny_config):
    """Box geometry is not Flickr30K's only: a VQA run on a store with boxes appends them, records it in
    the model's config, and prediction appends them again (its accuracy equals training's)."""
    q, a = question_files(tmp_path)
    held_out = {}
    for name, path, field in (("q", q, "questions"), ("a", a, "annotations")):
        payload = json.loads(open(path).read())
        for entry in payload[field]:
            entry["question_id"] += 100
        held_out[name] = str(tmp_path / f"eval_{name}.json")
        open(held_out[name], "w").write(json.dumps(payload))
    store = write_store(tmp_path / "feats", {"7": np.ones((2, 8)), "12": -np.ones((3, 8))},
                        {"7": [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], "12": [[0, 0, 1, 1]] * 3})
    fast = ["--device", "cpu", "--num_workers", "0", "--seed", "1"]
    train = run_script(["VQA2/run_vqa2.py", "--train_questions", q, "--train_annotations", a,
                        "--eval_questions", held_out["q"], "--eval_annotations", held_out["a"], "--features", store, "--answer_vocab", "build",
                        "--model_name_or_path", tiny_config(0.0), "--output_dir", str(tmp_path / "run"),
                        "--batch_size", "2", "--max_steps", "3", *fast])
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["add_spatial_features"] is True and config["visual_embedding_dim"] == 8 + 6
    proc = run_script(["VQA2/run_predict.py", "--questions", held_out["q"], "--annotations", held_out["a"],
                       "--features", store,
                       "--model_name_or_path", str(tmp_path / "run" / "best"), "--output", str(tmp_path / "r.json"), *fast])
    predicted = json.loads(proc.stdout.strip().splitlines()[-1])["vqa_accuracy"]
    trained = json.loads((tmp_path / "run" / "best" / "eval_results.json").read_text())["vqa_accuracy"]
    assert predicted == pytest.approx(trained), train.stdout[-2000:]
