import itertools

import numpy as np
import paddle
import pytest

from visualbert import inputs as P
from visualbert.formats.vqa import read_answer_vocab


class FakeStore:
    """Features keyed by name: rows = number in the key's last char, value = a per-key constant."""

    def __init__(self, dim=4):
        self.dim = dim
        self.reads = []

    def get(self, key, dtype=np.float32):
        self.reads.append(key)
        rows = int(key[-1]) if key[-1].isdigit() else 2
        return np.full((rows, self.dim), float(sum(map(ord, key)) % 97), dtype or np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return P.get_tokenizer()


def official_leave_one_out(matches, n=10):
    """The vqaEval loop, written out: for each human left out, min(1, matches among the rest / 3)."""
    humans = [True] * matches + [False] * (n - matches)
    accs = []
    for i in range(n):
        rest = humans[:i] + humans[i + 1:]
        accs.append(min(1.0, sum(rest) / 3.0))
    return sum(accs) / n


def test_tokenising_with_the_real_vocab(tokenizer):
    assert len(tokenizer.vocab) == 30522
    ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("The right image shows a curving walkway."))
    assert tokenizer.convert_ids_to_tokens(ids) == ["the", "right", "image", "shows", "a", "curving", "walkway", "."]
    assert ids[:3] == [1996, 2157, 3746]
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 100, 101, 102, 103]


@pytest.mark.parametrize("k", range(11))
def test_soft_targets_equal_the_official_leave_one_out_accuracy(tokenizer, k):
    vocab = read_answer_vocab()
    answers = ["2"] * k + ["3"] * (10 - k)
    ex = {"question_str": "how many dogs?", "answers": answers, "image_key": "img3", "question_id": 5, "image_id": 1}
    labels = P.VQADataset([ex], tokenizer, FakeStore(), vocab)[0]["labels"]
    assert labels.dtype == np.float32 and labels.shape == (3129,)
    assert labels[vocab.index("2")] == pytest.approx(official_leave_one_out(k), abs=1e-6)
    assert labels[vocab.index("3")] == pytest.approx(official_leave_one_out(10 - k), abs=1e-6)
    assert np.count_nonzero(labels) == (k > 0) + (k < 10)


def test_soft_targets_normalise_answers_like_vqaeval(tokenizer):
    vocab = read_answer_vocab()
    ex = {"question_str": "what is it?", "answers": ["a Dog.", "dog", "the dog", "two", "not-in-vocab-xyz"] + ["cat"] * 5,
          "image_key": "img2", "question_id": 1, "image_id": 1}
    labels = P.VQADataset([ex], tokenizer, FakeStore(), vocab)[0]["labels"]
    assert labels[vocab.index("dog")] == pytest.approx(official_leave_one_out(3))
    assert labels[vocab.index("2")] == pytest.approx(official_leave_one_out(1))
    assert labels[vocab.index("cat")] == pytest.approx(1.0)
    assert labels[0] == 0.0


def test_soft_targets_normalise_even_when_all_humans_agree(tokenizer):
    # The metric compares unanimous answers verbatim, so no vocab answer can score on ten "t-shirt";
    # the target still points at the vocabulary's normalised "t shirt" rather than at nothing.
    vocab = read_answer_vocab()
    ex = {"question_str": "what is he wearing?", "answers": ["t-shirt"] * 10, "image_key": "img2",
          "question_id": 1, "image_id": 1}
    labels = P.VQADataset([ex], tokenizer, FakeStore(), vocab)[0]["labels"]
    assert "t-shirt" not in vocab
    assert labels[vocab.index("t shirt")] == pytest.approx(1.0) and np.count_nonzero(labels) == 1


def test_vqa_input_is_cls_question_qmark_mask_sep(tokenizer):
    ex = {"question_str": "What is the man holding?", "answers": None, "image_key": "COCO_train2014_000000000003",
          "question_id": 42, "image_id": 3}
    store = FakeStore(dim=6)
    item = P.VQADataset([ex], tokenizer, store, max_seq_length=128)[0]
    tokens = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert tokens == ["[CLS]", "what", "is", "the", "man", "holding", "?", "[MASK]", "[SEP]"]
    assert tokens[int(item["attention_mask"].sum()) - 2] == "[MASK]"  # where the QA head reads
    assert item["token_type_ids"].tolist() == [0] * 9 and item["input_ids"].dtype == np.int64
    assert item["visual_embeds"].shape == (3, 6) and item["visual_embeds"].dtype == np.float32
    assert item["visual_token_type_ids"].tolist() == [0, 0, 0] and item["visual_attention_mask"].tolist() == [1, 1, 1]
    assert "labels" not in item and item["question_id"] == 42
    short = P.VQADataset([ex], tokenizer, store, max_seq_length=6)[0]
    assert tokenizer.convert_ids_to_tokens(short["input_ids"].tolist()) == ["[CLS]", "what", "is", "?", "[MASK]", "[SEP]"]


def test_nlvr2_input_left_then_right_regions_with_types(tokenizer):
    ex = {"identifier": "dev-1-0-0", "sentence": "Two dogs.", "label": 1, "image_keys": ("dev-1-0-img3", "dev-1-0-img2")}
    store = FakeStore()
    item = P.NLVR2Dataset([ex], tokenizer, store)[0]
    assert tokenizer.convert_ids_to_tokens(item["input_ids"].tolist()) == ["[CLS]", "two", "dogs", ".", "[SEP]"]
    assert item["visual_token_type_ids"].tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(item["visual_embeds"][:3], store.get("dev-1-0-img3"))
    np.testing.assert_array_equal(item["visual_embeds"][3:], store.get("dev-1-0-img2"))
    assert item["labels"] == 1 and item["labels"].dtype == np.int64 and item["identifier"] == "dev-1-0-0"
    pre = P.NLVR2PretrainDataset([ex], tokenizer, store, seed=3)[0]
    assert pre["sentence_image_labels"] == 1 and pre["labels"].shape == pre["input_ids"].shape
    with pytest.raises(ValueError, match="example dev-1-0-0 has no label"):
        P.NLVR2PretrainDataset([dict(ex, label=None)], tokenizer, store)


def caption_examples(n_images=6, per_image=3):
    words = ["dog", "cat", "horse", "bus", "car", "pizza", "bird", "train"]
    return [{"image_id": i, "caption_id": i * 10 + j, "caption": f"a {words[i % 8]} number {j} near the tree",
             "image_key": f"COCO_train2014_{i:012d}"} for i in range(n_images) for j in range(per_image)]


def test_caption_pairs_match_label_and_are_redrawn_each_epoch_from_the_seed(tokenizer):
    exs = caption_examples()
    ds = P.CaptionPretrainDataset(exs, tokenizer, FakeStore(), seed=7)
    sep = 102
    labels = []
    for epoch, i in itertools.product(range(8), range(len(exs))):
        ds.set_epoch(epoch)
        item = ds[i]
        ids, types, mlm = item["input_ids"], item["token_type_ids"], item["labels"]
        original = np.where(mlm != -100, mlm, ids)
        first_sep = int(np.flatnonzero(original == sep)[0])
        assert types[: first_sep + 1].tolist() == [0] * (first_sep + 1) and set(types[first_sep + 1:].tolist()) == {1}
        text_b = tokenizer.convert_ids_to_tokens(original[first_sep + 1: -1].tolist())
        text_a = tokenizer.convert_ids_to_tokens(original[1:first_sep].tolist())
        assert " ".join(text_a) == exs[i]["caption"]
        same_image = [e["caption"] for e in exs if e["image_key"] == exs[i]["image_key"] and e is not exs[i]]
        assert (" ".join(text_b) in same_image) == bool(item["sentence_image_labels"] == 1)
        labels.append(int(item["sentence_image_labels"]))
    assert 0.4 < np.mean(labels) < 0.6
    ds.set_epoch(3)
    again = P.CaptionPretrainDataset(exs, tokenizer, FakeStore(), seed=7)
    again.set_epoch(3)
    for i in range(len(exs)):
        for k in ("input_ids", "labels", "sentence_image_labels"):
            np.testing.assert_array_equal(ds[i][k], again[i][k])
    epochs = [[(ds.set_epoch(e), ds[i]["input_ids"].tolist())[1] for i in range(len(exs))] for e in (0, 1)]
    assert epochs[0] != epochs[1]
    other_seed = P.CaptionPretrainDataset(exs, tokenizer, FakeStore(), seed=8)
    assert [other_seed[i]["input_ids"].tolist() for i in range(len(exs))] != epochs[0]
    with pytest.raises(ValueError, match="at least two images"):
        P.CaptionPretrainDataset(exs[:3], tokenizer, FakeStore())


def test_mlm_masks_only_text_tokens_80_10_10(tokenizer):
    rng = np.random.default_rng(0)
    ids = np.concatenate([[101], np.arange(2000, 2100), [102]]).astype(np.int64)
    candidates = (ids != 101) & (ids != 102)
    chosen = masked = randomised = kept = 0
    for _ in range(400):
        out, labels = P.mask_tokens(ids, candidates, rng, mask_id=103, vocab_size=30522)
        sel = labels != -100
        assert not sel[0] and not sel[-1]
        np.testing.assert_array_equal(labels[sel], ids[sel])
        np.testing.assert_array_equal(out[~sel], ids[~sel])
        chosen += sel.sum()
        masked += (out[sel] == 103).sum()
        kept += (out[sel] == ids[sel]).sum()
        randomised += ((out[sel] != 103) & (out[sel] != ids[sel])).sum()
    assert chosen / (400 * 100) == pytest.approx(0.15, abs=0.01)
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert kept / chosen == pytest.approx(0.1, abs=0.02)
    assert randomised / chosen == pytest.approx(0.1, abs=0.02)
    one = np.array([101, 2000, 102])
    for seed in range(20):
        _, labels = P.mask_tokens(one, one == 2000, np.random.default_rng(seed), 103, 30522)
        assert labels.tolist() == [-100, 2000, -100]  # never a sample without a masked token


def test_vqa_pretraining_text_is_question_then_most_frequent_answer(tokenizer):
    ex = {"question_str": "what animal?", "answers": ["cat", "dog", "dog", "cat", "dog"], "image_key": "img1", "question_id": 3, "image_id": 1}
    ds = P.VQAPretrainDataset([ex], tokenizer, FakeStore(), mask_prob=0.0, seed=1)
    item = ds[0]
    original = np.where(item["labels"] != -100, item["labels"], item["input_ids"])
    assert tokenizer.convert_ids_to_tokens(original.tolist()) == ["[CLS]", "what", "animal", "?", "dog", "[SEP]"]
    assert (item["labels"] != -100).sum() == 1  # mask_prob 0 still masks one token
    assert "sentence_image_labels" not in item


def test_text_is_tokenised_once_not_per_epoch(tokenizer, monkeypatch):
    calls = []
    original = tokenizer.tokenize
    monkeypatch.setattr(tokenizer, "tokenize", lambda text: calls.append(text) or original(text))
    exs = caption_examples(n_images=3, per_image=2)
    ds = P.CaptionPretrainDataset(exs, tokenizer, FakeStore(), seed=0)
    built = len(calls)
    assert built == len(exs)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
    assert len(calls) == built
    nl = [{"identifier": f"dev-1-{k}-0", "sentence": "same sentence", "label": 0, "image_keys": ("a1", "b2")} for k in range(4)]
    calls.clear()
    P.NLVR2Dataset(nl, tokenizer, FakeStore())
    assert calls == ["same sentence"]


def test_collator_pads_text_and_regions_and_keeps_label_kinds_apart():
    a = {"input_ids": np.array([101, 5, 102]), "token_type_ids": np.zeros(3, np.int64), "attention_mask": np.ones(3, np.int64),
         "visual_embeds": np.ones((2, 4), np.float32), "visual_token_type_ids": np.zeros(2, np.int64),
         "visual_attention_mask": np.ones(2, np.int64), "labels": np.array([-100, 5, -100]), "identifier": "x-0", "question_id": np.int64(7)}
    b = {"input_ids": np.array([101, 6, 7, 8, 102]), "token_type_ids": np.array([0, 0, 1, 1, 1]), "attention_mask": np.ones(5, np.int64),
         "visual_embeds": np.full((4, 4), 2.0, np.float32), "visual_token_type_ids": np.array([0, 0, 1, 1]),
         "visual_attention_mask": np.ones(4, np.int64), "labels": np.array([-100, -100, 7, -100, -100]), "identifier": "y-1",
         "question_id": np.int64(8)}
    batch = P.Collator(text_labels=True)([a, b])
    assert batch["input_ids"].tolist() == [[101, 5, 102, 0, 0], [101, 6, 7, 8, 102]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["token_type_ids"].tolist() == [[0] * 5, [0, 0, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 5, -100, -100, -100], [-100, -100, 7, -100, -100]]
    assert batch["visual_embeds"].shape == (2, 4, 4) and batch["visual_embeds"].dtype == np.float32
    assert batch["visual_embeds"][0, 2:].tolist() == [[0.0] * 4] * 2
    assert batch["visual_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["visual_token_type_ids"].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]
    assert batch["identifier"] == ["x-0", "y-1"] and batch["question_id"].tolist() == [7, 8]
    assert all(batch[k].dtype == np.int64 for k in ("input_ids", "labels", "visual_attention_mask"))
    # VQA soft scores are not text-aligned: stacked, never padded with -100
    soft = [dict(a, labels=np.array([0.0, 1.0, 0.3], np.float32)), dict(b, labels=np.array([0.6, 0.0, 0.0], np.float32))]
    vqa = P.Collator(text_labels=False)(soft)
    assert vqa["labels"].dtype == np.float32
    np.testing.assert_allclose(vqa["labels"], [[0.0, 1.0, 0.3], [0.6, 0.0, 0.0]])
    with pytest.raises(ValueError, match="different keys"):
        P.Collator()([a, {k: v for k, v in b.items() if k != "identifier"}])
    # What reaches the model: the padded arrays its forward takes; ids stay behind for the result files.
    from visualbert.engine import model_kwargs
    from visualbert.modeling import VisualBertForPreTraining

    tensors = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    assert set(model_kwargs(VisualBertForPreTraining, tensors, extra=None)) == {
        "input_ids", "token_type_ids", "attention_mask", "visual_embeds", "visual_token_type_ids",
        "visual_attention_mask", "labels"}


def test_dataloader_with_workers_gives_the_same_batches_as_direct_collation(tokenizer):
    exs = caption_examples(n_images=4, per_image=2)
    ds = P.CaptionPretrainDataset(exs, tokenizer, FakeStore(), seed=11)
    ds.set_epoch(2)
    collate = ds.collate_fn()
    expected = [collate([ds[i] for i in range(s, min(s + 3, len(ds)))]) for s in range(0, len(ds), 3)]
    loader = paddle.io.DataLoader(ds, batch_size=3, shuffle=False, num_workers=2, collate_fn=collate)
    got = list(loader)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert set(g) == set(e)
        for k in e:
            value = g[k].numpy() if hasattr(g[k], "numpy") else np.asarray(g[k])
            np.testing.assert_array_equal(value, e[k])


def test_float16_visual_path_keeps_packed_rows_unconverted(tmp_path, tokenizer):
    import os

    from visualbert.features import open_features, pack_features

    root = str(tmp_path)
    d = os.path.join(root, "data/detectron_fix_100/fc6/vqa/train2014")
    os.makedirs(d)
    rows = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.save(os.path.join(d, "COCO_train2014_000000000001.npy"), rows)
    pack_features("coco_detectron_fix_100", root, progress=False)
    store = open_features("coco_detectron_fix_100", root)
    ex = {"question_str": "what?", "answers": ["yes"] * 10, "image_key": "COCO_train2014_000000000001", "question_id": 1, "image_id": 1}
    half = P.VQADataset([ex], tokenizer, store, visual_dtype="float16")
    full = P.VQADataset([ex], tokenizer, store)
    assert half[0]["visual_embeds"].dtype == np.float16 and full[0]["visual_embeds"].dtype == np.float32
    np.testing.assert_array_equal(half[0]["visual_embeds"].astype(np.float32), full[0]["visual_embeds"])
    np.testing.assert_array_equal(full[0]["visual_embeds"], rows.astype(np.float16).astype(np.float32))
    assert half.collate_fn()([half[0], half[0]])["visual_embeds"].dtype == np.float16
    with pytest.raises(ValueError, match="visual_dtype must be float32 or float16"):
        P.VQADataset([ex], tokenizer, store, visual_dtype="int8")
