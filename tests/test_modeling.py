"""Behaviour of visualbert.modeling on tiny random models (parity with transformers is in test_convert)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from helpers import ALL_HEADS, B, T, V, make, numpy_batch, tensors, tiny_model_config
from visualbert import modeling as vm


@pytest.mark.parametrize("cls", ALL_HEADS)
def test_special_visual_initialize_survives_weight_init(cls):
    model = make(cls)
    emb = model.base_model.embeddings
    np.testing.assert_array_equal(emb.visual_position_embeddings.weight.numpy(), emb.position_embeddings.weight.numpy())
    np.testing.assert_array_equal(emb.visual_token_type_embeddings.weight.numpy(),
                                  emb.token_type_embeddings.weight.numpy())
    assert abs(float(emb.position_embeddings.weight.std()) - 0.02) < 0.005  # init did run


def test_without_special_visual_initialize_tables_are_independent():
    emb = make(vm.VisualBertModel, special_visual_initialize=False).embeddings
    assert not np.array_equal(emb.visual_position_embeddings.weight.numpy(), emb.position_embeddings.weight.numpy())


def test_parameter_names_are_transformers_state_dict_keys():
    keys = set(make(vm.VisualBertForPreTraining).state_dict())
    for key in ("visual_bert.embeddings.word_embeddings.weight", "visual_bert.embeddings.visual_projection.weight",
                "visual_bert.embeddings.visual_token_type_embeddings.weight",
                "visual_bert.encoder.layer.1.attention.self.query.weight",
                "visual_bert.encoder.layer.0.attention.output.LayerNorm.bias",
                "visual_bert.encoder.layer.0.intermediate.dense.weight", "visual_bert.pooler.dense.bias",
                "cls.predictions.bias", "cls.predictions.transform.LayerNorm.weight", "cls.seq_relationship.weight"):
        assert key in keys
    assert "cls.predictions.decoder.weight" not in keys  # tied to the word embeddings
    untied = set(make(vm.VisualBertForPreTraining, tie_word_embeddings=False).state_dict())
    assert "cls.predictions.decoder.weight" in untied
    assert "cls.predictions.decoder.weight" in make(vm.VisualBertForRegionToPhraseAlignment).state_dict()


def test_token_id_1_is_a_real_token():
    # pad_token_id is 1 ([unused0]); with padding_idx Paddle would embed it as zeros.
    model = make(vm.VisualBertModel)
    assert model.config.pad_token_id == 1
    assert float(paddle.abs(model.embeddings.word_embeddings(paddle.to_tensor([[1]]))).sum()) > 0


def test_outputs_attentions_hidden_states_and_tuples():
    model = make(vm.VisualBertModel)
    o = model(**tensors(numpy_batch()), output_attentions=True, output_hidden_states=True)
    assert o.last_hidden_state.shape == [B, T + V, 32] and o.pooler_output.shape == [B, 32]
    assert len(o.hidden_states) == 3 and len(o.attentions) == 2
    assert o.attentions[0].shape == [B, 4, T + V, T + V]
    # Padded text/regions receive no attention.
    assert float(o.attentions[1][1, :, :, 4:6].abs().max()) < 1e-20
    assert float(o.attentions[1][0, :, :, T + 2:].abs().max()) < 1e-20
    plain = model(**tensors(numpy_batch()), return_dict=False)
    assert isinstance(plain, tuple) and len(plain) == 2
    np.testing.assert_allclose(plain[0].numpy(), o.last_hidden_state.numpy(), atol=1e-6)


def test_text_only_input():
    batch = numpy_batch()
    text = {k: paddle.to_tensor(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    assert make(vm.VisualBertModel)(**text).last_hidden_state.shape == [B, T, 32]
    assert make(vm.VisualBertForPreTraining)(**text).prediction_logits.shape == [B, T, 50]
    assert make(vm.VisualBertForQuestionAnswering, num_labels=5)(**text).logits.shape == [B, 5]
    assert make(vm.VisualBertForVisualReasoning)(**text).logits.shape == [B, 2]


def test_image_text_alignment():
    model = make(vm.VisualBertModel)
    batch = tensors(numpy_batch())
    plain = model(**batch).last_hidden_state.numpy()
    unaligned = paddle.full([B, V, 2], -1, dtype="int64")
    np.testing.assert_allclose(model(**batch, image_text_alignment=unaligned).last_hidden_state.numpy(), plain,
                               atol=1e-6)
    aligned = paddle.to_tensor(np.array([[[1, 2], [3, -1], [-1, -1]], [[0, -1], [-1, -1], [2, 4]]], np.int64))
    out = model(**batch, image_text_alignment=aligned).last_hidden_state.numpy()
    assert np.abs(out - plain).max() > 1e-3
    # Longer alignment (detector fine-tuning pads it) is cut to the regions; shorter is an error.
    longer = paddle.concat([aligned, paddle.full([B, 2, 2], -1, dtype="int64")], axis=1)
    np.testing.assert_allclose(model(**batch, image_text_alignment=longer).last_hidden_state.numpy(), out, atol=1e-6)
    with pytest.raises(ValueError, match="image_text_alignment covers 2 regions"):
        model(**batch, image_text_alignment=aligned[:, :2])


def test_bypass_transformer():
    model = make(vm.VisualBertModel, bypass_transformer=True)
    batch = tensors(numpy_batch())
    o = model(**batch, output_attentions=True, output_hidden_states=True)
    assert o.last_hidden_state.shape == [B, T + V, 32]
    assert len(o.hidden_states) == 4 and o.attentions[0].shape == [B, 4, T, T]
    assert o.attentions[-1].shape == [B, 4, T + V, T + V]
    # The text encoder never sees the regions: changing them leaves the text-only pass unchanged.
    emb = model.embeddings(batch["input_ids"], batch["token_type_ids"], None, None, batch["visual_embeds"],
                           batch["visual_token_type_ids"])
    text_out, _, _ = model.encoder(emb[:, :T], vm._mask_bias(batch["attention_mask"], emb.dtype))
    joint = paddle.concat([text_out, emb[:, T:]], axis=1)
    full = paddle.concat([batch["attention_mask"], batch["visual_attention_mask"]], axis=1)
    expected, _ = model.additional_layer(joint, vm._mask_bias(full, emb.dtype))
    np.testing.assert_allclose(o.last_hidden_state.numpy(), expected.numpy(), atol=1e-6)


def mlm_labels(seed=1):
    g = np.random.default_rng(seed)
    labels = np.where(g.random((B, T)) < 0.5, g.integers(0, 50, (B, T)), -100).astype(np.int64)
    labels[0, 1] = 7  # at least one labelled position
    return labels


def test_pretraining_losses_and_label_lengths():
    model = make(vm.VisualBertForPreTraining)
    batch = tensors(numpy_batch())
    labels = mlm_labels()
    full_labels = np.concatenate([labels, np.full((B, V), -100, np.int64)], axis=1)
    nsp = paddle.to_tensor(np.array([1, 0], np.int64))
    short = model(**batch, labels=paddle.to_tensor(labels), sentence_image_labels=nsp)
    full = model(**batch, labels=paddle.to_tensor(full_labels), sentence_image_labels=nsp)
    np.testing.assert_allclose(float(short.loss), float(full.loss), rtol=1e-6)
    logits = full.prediction_logits.numpy().reshape(-1, 50)
    keep = full_labels.reshape(-1) != -100
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    manual_mlm = -log_probs[keep, full_labels.reshape(-1)[keep]].mean()
    np.testing.assert_allclose(float(full.masked_lm_loss), manual_mlm, rtol=1e-5)
    manual_nsp = float(F.cross_entropy(full.seq_relationship_logits, nsp))
    np.testing.assert_allclose(float(full.sentence_image_loss), manual_nsp, rtol=1e-6)
    np.testing.assert_allclose(float(full.loss), manual_mlm + manual_nsp, rtol=1e-5)
    mlm_only = model(**batch, labels=paddle.to_tensor(labels))
    assert mlm_only.sentence_image_loss is None and float(mlm_only.loss) == pytest.approx(manual_mlm, rel=1e-5)
    assert model(**batch).loss is None
    with pytest.raises(ValueError, match="labels have length 4"):
        model(**batch, labels=paddle.to_tensor(labels[:, :4]))


def test_predict_masked_only_matches_full_computation():
    model = make(vm.VisualBertForPreTraining)
    batch = tensors(numpy_batch())
    labels = paddle.to_tensor(mlm_labels())
    nsp = paddle.to_tensor(np.array([0, 1], np.int64))
    full = model(**batch, labels=labels, sentence_image_labels=nsp)
    fast = model(**batch, labels=labels, sentence_image_labels=nsp, predict_masked_only=True)
    keep = mlm_labels() != -100
    assert fast.prediction_logits.shape == [int(keep.sum()), 50]
    np.testing.assert_allclose(fast.prediction_logits.numpy(), full.prediction_logits.numpy()[:, :T][keep], atol=1e-5)
    np.testing.assert_allclose(float(fast.masked_lm_loss), float(full.masked_lm_loss), rtol=1e-6)
    np.testing.assert_allclose(float(fast.loss), float(full.loss), rtol=1e-6)
    fast.loss.backward()
    assert model.visual_bert.embeddings.word_embeddings.weight.grad is not None
    nothing = model(**batch, labels=paddle.full([B, T], -100, dtype="int64"), predict_masked_only=True)
    assert float(nothing.loss) == 0.0 and nothing.prediction_logits.shape == [0, 50]


def test_vqa_head_gathers_the_mask_token_and_both_losses():
    model = make(vm.VisualBertForQuestionAnswering, num_labels=5)
    batch = tensors(numpy_batch())
    o = model(**batch, output_hidden_states=True)
    last = o.hidden_states[-1].numpy()
    rows = last[[0, 1], [T - 2, 4 - 2]]  # sum(attention_mask) - 2 per row
    weight, bias = model.cls.weight.numpy(), model.cls.bias.numpy()
    np.testing.assert_allclose(o.logits.numpy(), rows @ weight + bias, atol=1e-5)
    targets = np.array([[0, 0.3, 1, 0, 0], [0.6, 0, 0, 0, 0.9]], np.float32)
    logits = o.logits.numpy().astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    safe = np.where(targets > 0, targets, 1)
    kl = (np.where(targets > 0, targets * (np.log(safe) - log_p), 0)).sum() / B
    got = model(**batch, labels=paddle.to_tensor(targets))
    np.testing.assert_allclose(float(got.loss), kl, rtol=1e-5)
    np.testing.assert_allclose(got.logits.numpy(), o.logits.numpy(), atol=1e-6)  # raw scores, not log-probs
    bce = np.mean(np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))) * 5
    np.testing.assert_allclose(float(model(**batch, labels=paddle.to_tensor(targets), loss_type="bce").loss), bce,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="loss_type"):
        model(**batch, labels=paddle.to_tensor(targets), loss_type="mse")


@pytest.mark.parametrize("loss_type", ["kl", "bce"])
def test_vqa_loss_under_bf16_keeps_the_soft_scores_exact(loss_type, monkeypatch):
    """Under bf16 AMP the logits come out in bf16; the soft targets (0.3, 0.6, 0.9) must not be
    rounded to that dtype (0.3 -> 0.3008): the loss is computed in float32."""
    model = make(vm.VisualBertForQuestionAnswering, num_labels=5)
    batch = tensors(numpy_batch())
    head = model.cls.forward
    monkeypatch.setattr(model.cls, "forward", lambda x: head(x).astype("bfloat16"))  # what AMP hands back
    targets = np.array([[0, 0.3, 1, 0, 0], [0.6, 0, 0, 0, 0.9]], np.float32)
    out = model(**batch, labels=paddle.to_tensor(targets), loss_type=loss_type)
    assert out.logits.dtype == paddle.bfloat16 and out.loss.dtype == paddle.float32
    logits = out.logits.astype("float32").numpy().astype(np.float64)  # the bf16 scores, exactly
    if loss_type == "kl":
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        safe = np.where(targets > 0, targets, 1)
        expected = (np.where(targets > 0, targets * (np.log(safe) - log_p), 0)).sum() / B
    else:
        expected = np.mean(np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))) * 5
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-6)


def test_visual_reasoning_and_multiple_choice():
    batch = tensors(numpy_batch())
    nlvr2 = make(vm.VisualBertForVisualReasoning)
    o = nlvr2(**batch, labels=paddle.to_tensor(np.array([1, 0], np.int64)))
    assert o.logits.shape == [B, 2]
    np.testing.assert_allclose(float(o.loss), float(F.cross_entropy(o.logits, paddle.to_tensor([1, 0]))), rtol=1e-6)

    mc = make(vm.VisualBertForMultipleChoice)
    raw = numpy_batch()
    choices = {k: paddle.to_tensor(np.stack([v, v], axis=1)) for k, v in raw.items()}
    choices["image_text_alignment"] = paddle.full([B, 2, V, 2], -1, dtype="int64")
    o = mc(**choices, labels=paddle.to_tensor(np.array([0, 1], np.int64)))
    assert o.logits.shape == [B, 2]
    np.testing.assert_allclose(o.logits.numpy()[:, 0], o.logits.numpy()[:, 1], atol=1e-6)  # identical choices
    np.testing.assert_allclose(float(o.loss), np.log(2), rtol=1e-5)


def test_region_to_phrase_alignment():
    model = make(vm.VisualBertForRegionToPhraseAlignment)
    batch = tensors(numpy_batch())
    positions = paddle.to_tensor(np.array([[1, 2], [3, -1]], np.int64))
    o = model(**batch, region_to_phrase_position=positions)
    assert o.logits.shape == [B, 2, V]
    assert float(o.logits[0, :, 2:].max()) < -1e30  # padded region
    labels = np.full((B, 2, V), 1.0 / 3, np.float32)
    labels[0] = [0.5, 0.5, 0]
    assert np.isfinite(float(model(**batch, region_to_phrase_position=positions,
                                   labels=paddle.to_tensor(labels)).loss))
    with pytest.raises(ValueError, match="region_to_phrase_position"):
        model(**batch)


@pytest.mark.parametrize("cls", ALL_HEADS)
def test_save_pretrained_from_pretrained_round_trip(cls, tmp_path):
    model = make(cls, bypass_transformer=cls is vm.VisualBertModel)
    model.save_pretrained(str(tmp_path))
    loaded = cls.from_pretrained(str(tmp_path))
    loaded.eval()
    assert type(loaded.config) is vm.VisualBertConfig and loaded.config.bypass_transformer == model.config.bypass_transformer
    before, after = model.state_dict(), loaded.state_dict()
    assert sorted(before) == sorted(after)
    for key in before:
        np.testing.assert_array_equal(before[key].numpy(), after[key].numpy(), err_msg=key)
    batch = tensors(numpy_batch())
    if cls is vm.VisualBertForMultipleChoice:
        batch = {k: v.unsqueeze(1) for k, v in batch.items()}
    extra = {"region_to_phrase_position": paddle.to_tensor([[1], [2]])} if cls is \
        vm.VisualBertForRegionToPhraseAlignment else {}
    first = model(**batch, **extra, return_dict=False)[0].numpy()
    np.testing.assert_array_equal(loaded(**batch, **extra, return_dict=False)[0].numpy(), first)


def test_released_names_are_registered():
    assert len(vm.RELEASED_MODELS) == 9
    cfg = vm.VisualBertConfig.from_pretrained("visualbert-vqa")
    assert (cfg.visual_embedding_dim, cfg.num_labels, cfg.hidden_size, cfg.vocab_size) == (2048, 3129, 768, 30522)
    assert cfg.special_visual_initialize and cfg.pad_token_id == 1
    assert vm.VisualBertConfig.from_pretrained("visualbert-nlvr2-coco-pre").visual_embedding_dim == 1024
    assert vm.VisualBertConfig.from_pretrained("visualbert-nlvr2").num_labels == 2
    assert vm.VisualBertConfig.from_pretrained("visualbert-vcr-pre").visual_embedding_dim == 512
    assert vm.RELEASED_MODELS["visualbert-vcr"][0] == "VisualBertForMultipleChoice"


def test_released_name_without_converted_weights_says_how_to_convert(tmp_path, monkeypatch):
    import paddlenlp.utils.env

    monkeypatch.setattr(paddlenlp.utils.env, "MODEL_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        vm.VisualBertForPreTraining.from_pretrained("visualbert-vqa-coco-pre")
    message = str(info.value)
    assert "\n" not in message and "python -m visualbert.convert" in message and "uclanlp/visualbert-vqa-coco-pre" in message


def test_released_name_loads_a_converted_copy_from_model_home(tmp_path, monkeypatch):
    import paddlenlp.utils.env

    monkeypatch.setattr(paddlenlp.utils.env, "MODEL_HOME", str(tmp_path))
    model = make(vm.VisualBertForVisualReasoning)
    model.save_pretrained(str(tmp_path / "visualbert-nlvr2"))
    loaded = vm.VisualBertForVisualReasoning.from_pretrained("uclanlp/visualbert-nlvr2")
    np.testing.assert_array_equal(loaded.cls.weight.numpy(), model.cls.weight.numpy())


class RecordedAttention:
    """Stands in for F.scaled_dot_product_attention: records what reaches the kernel, then computes it."""

    def __init__(self, kernel):
        self.kernel, self.masks = kernel, []

    def __call__(self, query, key, value, attn_mask=None, **kw):
        self.masks.append(attn_mask)
        return self.kernel(query, key, value, attn_mask=attn_mask, **kw)


@pytest.fixture
def fused_on_cpu(monkeypatch):
    """The fused path as an accelerator in half precision takes it, run on the CPU in float32
    (Paddle's CPU build has no fp16/bf16 matmul): the kernel call is recorded."""
    import paddle.nn.functional as F

    recorded = RecordedAttention(F.scaled_dot_product_attention)
    monkeypatch.setattr(vm, "_FUSED_DTYPES", (paddle.float32,))
    monkeypatch.setattr(vm, "_on_cpu", lambda tensor: False)
    monkeypatch.setattr(vm.F, "scaled_dot_product_attention", recorded)
    return recorded


def test_fused_attention_gets_a_per_query_mask_and_matches_the_matmul_path(fused_on_cpu):
    config = tiny_model_config()
    paddle.seed(0)
    layer = vm.VisualBertSelfAttention(config)
    layer.eval()
    hidden = paddle.randn([2, 6, config.hidden_size])
    keep = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    bias = vm._mask_bias(paddle.to_tensor(keep), "float32")
    fused = layer(hidden, bias)[0].numpy()
    # the kernel got [B, 1, Lq, Lk], every query row holding its own sample's padding: flash
    # attention reads rows Lk apart, so a [B, 1, 1, Lk] bias would give row r sample b+r's padding
    (mask,) = fused_on_cpu.masks
    assert mask.shape == [2, 1, 6, 6] and mask.dtype == paddle.float32
    expected = np.where(keep == 1, 0.0, np.finfo(np.float32).min)[:, None, None, :].repeat(6, axis=2)
    np.testing.assert_array_equal(mask.numpy(), expected)

    layer.use_fused = False
    matmul = layer(hidden, bias)[0].numpy()
    np.testing.assert_allclose(fused, matmul, atol=1e-5)
    full = bias.expand([2, config.num_attention_heads, 6, 6])  # a bias given per head and query
    np.testing.assert_allclose(layer(hidden, full)[0].numpy(), fused, atol=1e-5)
    layer.use_fused = True
    np.testing.assert_allclose(layer(hidden, full)[0].numpy(), fused, atol=1e-5)
    assert fused_on_cpu.masks[-1].shape == [2, config.num_attention_heads, 6, 6]
    layer.use_fused = False
    # The masked keys really are ignored: changing them leaves the other positions' outputs alone.
    moved = hidden.numpy().copy()
    moved[0, 4:] += 3.0
    np.testing.assert_allclose(layer(paddle.to_tensor(moved), bias)[0].numpy()[0, :4], fused[0, :4], atol=1e-5)
    # Attending from a subset of positions gives those positions' rows, on both paths; the kernel's
    # mask then has the subset's query length.
    queries = hidden[:, 2:4]
    np.testing.assert_allclose(layer(hidden, bias, query_states=queries)[0].numpy(), fused[:, 2:4], atol=1e-5)
    layer.use_fused = True
    np.testing.assert_allclose(layer(hidden, bias, query_states=queries)[0].numpy(), fused[:, 2:4], atol=1e-5)
    assert fused_on_cpu.masks[-1].shape == [2, 1, 2, 6]


def test_whole_model_through_the_fused_path_equals_the_matmul_path(fused_on_cpu):
    model = make(vm.VisualBertModel)
    batch = tensors(numpy_batch())
    fused = model(**batch).last_hidden_state.numpy()
    assert len(fused_on_cpu.masks) == model.config.num_hidden_layers
    for layer in model.encoder.layer:
        layer.attention.self.use_fused = False
    np.testing.assert_allclose(model(**batch).last_hidden_state.numpy(), fused, atol=1e-5)


def test_fused_kernel_only_in_half_precision_on_an_accelerator(monkeypatch):
    import paddle.nn.functional as F

    recorded = RecordedAttention(F.scaled_dot_product_attention)
    monkeypatch.setattr(vm.F, "scaled_dot_product_attention", recorded)
    monkeypatch.setattr(vm, "_on_cpu", lambda tensor: False)  # an accelerator, computing in float32
    layer = vm.VisualBertSelfAttention(tiny_model_config())
    hidden = paddle.randn([2, 8, layer.all_head_size])  # 8: where Paddle picks its memory-efficient kernel
    layer(hidden, vm._mask_bias(paddle.ones([2, 8]), "float32"))
    assert recorded.masks == []  # float32 takes the matmul path
    for dtype in ("float16", "bfloat16"):
        assert layer.takes_fused(paddle.zeros([1], dtype=dtype), output_attentions=False, head_mask=None)
        assert not layer.takes_fused(paddle.zeros([1], dtype=dtype), output_attentions=True, head_mask=None)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_kernel_mask_in_half_precision_is_finite_and_per_query(dtype):
    bias = vm._mask_bias(paddle.to_tensor([[1, 1, 0], [1, 0, 0]]), "float32")
    mask = vm._kernel_mask(bias, batch=2, query_len=4, key_len=3, dtype=dtype)
    assert mask.shape == [2, 1, 4, 3] and mask.dtype == getattr(paddle, dtype)
    values = mask.astype("float32").numpy()
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values[:, 0, 3] == 0, [[True, True, False], [True, False, False]])
    assert values[1, 0, 2, 1] == float(paddle.finfo(getattr(paddle, dtype)).min)


@pytest.mark.parametrize("bypass", [False, True])
def test_last_layer_positions_give_the_full_models_rows_and_heads_use_them(bypass):
    base = make(vm.VisualBertModel, bypass_transformer=bypass)
    batch = tensors(numpy_batch())
    full = base(**batch).last_hidden_state.numpy()
    positions = paddle.to_tensor([[0, 5, 8], [3, 3, 1]])
    out = base(**batch, last_layer_positions=positions)
    assert out.pooler_output is None
    want = np.stack([full[0, [0, 5, 8]], full[1, [3, 3, 1]]])
    np.testing.assert_allclose(out.last_hidden_state.numpy(), want, atol=1e-5)
    with pytest.raises(ValueError, match="last_layer_positions"):
        base(**batch, last_layer_positions=positions, output_hidden_states=True)
    # The heads take the short path unless every position was asked for; both give the same logits.
    for cls in (vm.VisualBertForQuestionAnswering, vm.VisualBertForVisualReasoning):
        model = make(cls, bypass_transformer=bypass)
        short = model(**batch).logits.numpy()
        np.testing.assert_allclose(model(**batch, output_hidden_states=True).logits.numpy(), short, atol=1e-5)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu", "silu", "swish", "tanh"])
def test_every_accepted_hidden_act_runs(hidden_act):
    # transformers' names for the activations its VisualBERT configs use
    model = make(vm.VisualBertModel, hidden_act=hidden_act)
    assert np.isfinite(model(**tensors(numpy_batch())).last_hidden_state.numpy()).all()


def test_an_activation_the_model_lacks_is_refused_by_the_config():
    with pytest.raises(ValueError, match="hidden_act 'mish' is not supported"):
        vm.VisualBertConfig(hidden_act="mish")
