"""VisualBERT (Li et al., 2019) on PaddlePaddle: configuration, base model and five task heads.

The math and every parameter name follow HuggingFace ``transformers``' VisualBERT, so a converted
checkpoint is a plain copy of its state dict (Linear weights transposed). Where ``transformers``
is known to be wrong (``bypass_transformer``, ``special_visual_initialize`` being undone by weight
init) this file does what the paper and the original code do instead; see the class docstrings.
"""
import ctypes
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddlenlp.transformers import PretrainedConfig, PretrainedModel
from paddlenlp.transformers.model_outputs import (
    BaseModelOutputWithPooling,
    ModelOutput,
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
)

from . import onednn

__all__ = [
    "VisualBertConfig",
    "VisualBertPretrainedModel",
    "VisualBertModel",
    "VisualBertForPreTraining",
    "VisualBertForQuestionAnswering",
    "VisualBertForVisualReasoning",
    "VisualBertForMultipleChoice",
    "VisualBertForRegionToPhraseAlignment",
    "VisualBertForPreTrainingOutput",
    "RELEASED_MODELS",
]

# The nine checkpoints uclanlp released, with the head class each one was trained as and what
# differs from a BERT-base VisualBertConfig.
RELEASED_MODELS = {
    "visualbert-vqa": ("VisualBertForQuestionAnswering", {"visual_embedding_dim": 2048, "num_labels": 3129}),
    "visualbert-vqa-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 2048}),
    "visualbert-vqa-coco-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 2048}),
    "visualbert-nlvr2": ("VisualBertForVisualReasoning", {"visual_embedding_dim": 1024, "num_labels": 2}),
    "visualbert-nlvr2-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 1024}),
    "visualbert-nlvr2-coco-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 1024}),
    "visualbert-vcr": ("VisualBertForMultipleChoice", {"visual_embedding_dim": 512}),
    "visualbert-vcr-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 512}),
    "visualbert-vcr-coco-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 512}),
}


def _released_config(name):
    arch, overrides = RELEASED_MODELS[name]
    return dict(architectures=[arch], special_visual_initialize=True, **overrides)


class VisualBertConfig(PretrainedConfig):
    """Hyper-parameters of VisualBERT; field names and defaults are those of ``transformers``."""

    model_type = "visual_bert"
    pretrained_init_configuration = {name: _released_config(name) for name in RELEASED_MODELS}

    def __init__(self, vocab_size=30522, hidden_size=768, visual_embedding_dim=512, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, bypass_transformer=False,
                 special_visual_initialize=True, pad_token_id=1, bos_token_id=0, eos_token_id=2, **kwargs):
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        self.vocab_size, self.hidden_size, self.visual_embedding_dim = vocab_size, hidden_size, visual_embedding_dim
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.hidden_act = intermediate_size, hidden_act
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.initializer_range, self.layer_norm_eps = initializer_range, layer_norm_eps
        self.bypass_transformer, self.special_visual_initialize = bypass_transformer, special_visual_initialize


def _gelu(x):
    """Exact GELU; on CPU by oneDNN's kernel (see _cpu_gelu). Only ever applied to a fresh Linear output."""
    if _onednn_route(x, "gelu"):
        return _cpu_gelu(x)
    return F.gelu(x, approximate=False)


_ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_new": lambda x: F.gelu(x, approximate=True),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": paddle.tanh,
}


def _gather_positions(hidden_states, positions):
    """[B, L, hidden] at int positions [B, P] -> [B, P, hidden]."""
    rows = paddle.arange(positions.shape[0], dtype="int64").unsqueeze(1).expand(positions.shape)
    return paddle.gather_nd(hidden_states, paddle.stack([rows, positions.astype("int64")], axis=-1))


def _mask_bias(mask, dtype):
    """1/0 keep-mask [B, L] -> additive bias broadcastable to attention scores [B, H, Lq, L]."""
    mask = mask.astype(dtype)
    return ((1.0 - mask) * paddle.finfo(dtype).min).unsqueeze([1, 2])


# Paddle's CPU kernels for a few operations a BERT layer uses everywhere are far slower than the
# arithmetic needs (measured on the BERT-base shapes, BENCHMARKS.md): the separate broadcasting
# add F.linear does for the bias, the column sum that is the bias gradient (~60x a GEMV doing the
# same sum), dropout's per-element random draws (~15 ns each), the transpose that splits and
# merges attention heads (~5x slower than numpy's copy of the same permutation at batch 64), the
# attention softmax (~6x oneDNN's), GELU (~5x oneDNN's, ~9x in the backward) and the LayerNorm
# backward (~35x oneDNN's). Linear, LayerNorm, Dropout, _permute, _attention_softmax and _gelu below
# keep the stock layers' parameters, names and semantics, and route around those kernels on CPU
# only; on accelerators they are the stock operations.


CPU_FAST_PATHS = True


def set_cpu_fast_paths(enabled):
    """Turn the CPU routes below on (the default) or off (Paddle's stock CPU layers and kernels).

    On a CPU-only build this also decides Paddle's strided views: with them every transpose is a
    view that the next kernel copies back to contiguous memory, 4-7x slower than the transpose
    kernel it replaced (the BERT-base forward runs ~1.5x faster without them), so they are off
    while the routes are on, as in Paddle 2. It also decides how long Intel OpenMP's workers spin
    after a parallel region (see _set_openmp_blocktime). benchmarks/bench_model.py times both settings.
    """
    global CPU_FAST_PATHS
    CPU_FAST_PATHS = bool(enabled)
    if not paddle.is_compiled_with_cuda():
        paddle.set_flags({"FLAGS_use_stride_kernel": not CPU_FAST_PATHS})
        _set_openmp_blocktime(0 if CPU_FAST_PATHS else _OPENMP_DEFAULT_BLOCKTIME_MS)


# Intel OpenMP (MKL's threads in Paddle's CPU wheels) keeps its workers spinning for 200 ms after
# every parallel region. The numpy routes below run their own threads between Paddle's GEMMs, and a
# worker spinning on the other core halves them (measured: softmax and head permutes ~1.4x slower).
# Workers that sleep at once cost nothing measurable on the GEMMs. A KMP_BLOCKTIME the user set wins.
_OPENMP_DEFAULT_BLOCKTIME_MS = 200
_OPENMP_LIBRARY = os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")


def _set_openmp_blocktime(ms):
    if "KMP_BLOCKTIME" not in os.environ and os.path.exists(_OPENMP_LIBRARY):
        ctypes.CDLL(_OPENMP_LIBRARY).kmp_set_blocktime(ms)


set_cpu_fast_paths(True)


def _eager_on_cpu(x):
    # Graphs traced by paddle.jit.to_static keep the stock ops: their optimiser does its own fusing.
    return CPU_FAST_PATHS and paddle.in_dynamic_mode() and x.place.is_cpu_place()


# Below these sizes (elements) a route's fixed cost, ~0.1-0.2 ms to hand work to other threads and
# back, exceeds what it saves, and Paddle's kernel is faster (measured on BERT-base shapes at batch
# 1-16, BENCHMARKS.md). Paddle's transpose keeps up with numpy's copy up to ~1.5M elements.
ROUTE_MIN_ELEMENTS = {"dropout": 1, "softmax": 1 << 17, "gelu": 1 << 19, "layer_norm": 1 << 16, "permute": 1 << 21}


def _numpy_route(x, route):
    # The routes through numpy handle float32, what CPU training and inference compute in. Empty
    # tensors (a batch with nothing masked) stay with Paddle: numpy's strides for them are not Paddle's.
    return _eager_on_cpu(x) and x.dtype == paddle.float32 and x.size >= max(1, ROUTE_MIN_ELEMENTS[route])


def _onednn_route(x, route):
    return _ONEDNN is not None and _numpy_route(x, route)


_POOL = (None, 0, None)  # (pid, workers, executor): a forked process must not reuse its parent's threads


def _in_threads(fn, *arrays):
    """fn(*chunks) on slices of the arrays' first axis, one slice per Paddle intra-op thread.

    numpy's elementwise loops release the GIL, so the slices run in parallel, as Paddle's own
    kernels would on OMP_NUM_THREADS threads (which paddle sets, to 1 when unset, on import).
    """
    global _POOL
    parts = min(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)), arrays[0].shape[0])
    if parts == 1:
        fn(*arrays)
        return
    pid, workers, pool = _POOL
    if pid != os.getpid() or workers < parts:
        pool = ThreadPoolExecutor(parts, thread_name_prefix="visualbert-cpu")
        _POOL = (os.getpid(), parts, pool)
    bounds = np.linspace(0, arrays[0].shape[0], parts + 1).astype(int)
    jobs = [pool.submit(fn, *(a[lo:hi] for a in arrays)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    for job in jobs:
        job.result()


# Paddle's own CPU GELU, softmax and LayerNorm kernels are several times slower than oneDNN's (visualbert/onednn.py).
_ONEDNN = onednn.load()


def _scale_and_mask(scores, bias, out, scale):
    np.multiply(scores, np.float32(scale), out=out)
    if bias is not None:
        np.add(out, bias, out=out)


def _softmax_rows(out):
    np.subtract(out, out.max(axis=-1, keepdims=True), out=out)
    np.exp(out, out=out)
    np.divide(out, out.sum(axis=-1, keepdims=True), out=out)


def _softmax_grad_rows(probs, grad, out):
    # d softmax: p * (g - sum(g * p)).
    np.multiply(grad, probs, out=out)
    np.subtract(grad, out.sum(axis=-1, keepdims=True), out=out)
    np.multiply(out, probs, out=out)


def _as_numpy(x):
    return np.from_dlpack(x.detach())


def _cpu_softmax(scores, bias, scale, out):
    """out = softmax(scale * scores + bias) over the last axis, numpy arrays; ``out`` may be ``scores``.

    The scaling and the mask are numpy passes on Paddle's threads, the softmax is oneDNN's kernel
    (numpy's where Paddle ships no oneDNN).
    """
    if bias is None:
        _in_threads(lambda s, o: _scale_and_mask(s, None, o, scale), scores, out)
    else:
        _in_threads(lambda s, b, o: _scale_and_mask(s, b, o, scale), scores, np.broadcast_to(bias, scores.shape), out)
    if _ONEDNN is not None:
        _ONEDNN.softmax(out, out)
    else:
        _in_threads(_softmax_rows, out)


class _CPUSoftmax(paddle.autograd.PyLayer):
    """softmax(scale * scores + bias) over the last axis on CPU; ``bias`` (numpy) gets no gradient."""

    @staticmethod
    def forward(ctx, scores, bias, scale):
        source = _as_numpy(scores)
        out = np.empty(source.shape, np.float32)
        _cpu_softmax(source, bias, scale, out)
        probs = paddle.from_dlpack(out)
        ctx.save_for_backward(probs)
        ctx.scale = scale
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensor()
        probs, grad = _as_numpy(probs), _as_numpy(grad.contiguous())
        out = np.empty(probs.shape, np.float32)
        if _ONEDNN is not None:
            _ONEDNN.softmax_grad(probs, grad, out)
        else:
            _in_threads(_softmax_grad_rows, probs, grad, out)
        # The scores were scaled before the softmax.
        _in_threads(lambda o: np.multiply(o, np.float32(ctx.scale), out=o), out)
        return paddle.from_dlpack(out)


def _attention_softmax(scores, bias, scale):
    """softmax(scale * scores + bias, axis=-1); scores [B, H, Lq, L], bias broadcastable to it."""
    if _numpy_route(scores, "softmax") and (bias is None or bias.stop_gradient):
        bias = None if bias is None else _as_numpy(bias)
        if scores.stop_gradient:
            # Nothing differentiates through (inference): overwrite the scores, a fresh temporary,
            # rather than page-fault a new 40+ MB buffer per layer.
            in_place = _as_numpy(scores)
            _cpu_softmax(in_place, bias, scale, in_place)
            return scores
        return _CPUSoftmax.apply(scores, bias, scale)
    scores = scores * scale
    return F.softmax(scores if bias is None else scores + bias, axis=-1)


class _OneDNNGelu(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        out = np.empty(x.shape, np.float32)
        _ONEDNN.gelu(_as_numpy(x), out)
        return paddle.from_dlpack(out)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensor()
        out = np.empty(x.shape, np.float32)
        _ONEDNN.gelu_grad(_as_numpy(x), _as_numpy(grad.contiguous()), out)
        return paddle.from_dlpack(out)


def _cpu_gelu(x):
    if x.stop_gradient:
        # Nothing differentiates through (inference): overwrite the input, a fresh Linear output,
        # rather than page-fault a new buffer of batch x length x 3072 floats per layer.
        _ONEDNN.gelu(_as_numpy(x), _as_numpy(x))
        return x
    return _OneDNNGelu.apply(x)


class _NumpyPermute(paddle.autograd.PyLayer):
    """x.transpose(perm) as a numpy copy (buffers shared both ways through DLPack)."""

    @staticmethod
    def forward(ctx, x, perm):
        ctx.perm = perm
        return _numpy_permute(x, perm)

    @staticmethod
    def backward(ctx, grad):
        return _numpy_permute(grad, np.argsort(ctx.perm).tolist())


def _numpy_permute(x, perm):
    source = _as_numpy(x).transpose(perm)
    # np.empty, not np.ascontiguousarray: the latter may give size-1 axes strides Paddle rejects.
    out = np.empty(source.shape, source.dtype)
    _in_threads(np.copyto, out, source)
    return paddle.from_dlpack(out)


def _permute(x, perm):
    if _numpy_route(x, "permute"):
        return _NumpyPermute.apply(x, perm)
    return x.transpose(perm)


class _CPULinearFunction(paddle.autograd.PyLayer):
    """x @ W + b with the bias as the GEMM accumulator, and a backward made of GEMMs only."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return paddle.addmm(bias, x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        grad_x = None if x.stop_gradient else paddle.matmul(grad, weight, transpose_y=True)
        grad_weight = paddle.matmul(x, grad, transpose_x=True)
        grad_bias = paddle.matmul(paddle.ones([1, grad.shape[0]], grad.dtype), grad).reshape([-1])
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """``nn.Linear``; on CPU, bias added inside the GEMM and its gradient summed by a GEMV."""

    def forward(self, x):
        if self.bias is None or not _eager_on_cpu(x):
            return super().forward(x)
        out = _CPULinearFunction.apply(x.reshape([-1, x.shape[-1]]), self.weight, self.bias)
        return out.reshape(x.shape[:-1] + [out.shape[-1]])


class _OneDNNLayerNorm(paddle.autograd.PyLayer):
    """Layer norm over the last axis with weight and bias, forward and backward by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, epsilon):
        out, mean, variance = _onednn_layer_norm(x, weight, bias, epsilon)
        ctx.save_for_backward(x, weight, bias)
        ctx.stats = (mean, variance, epsilon)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensor()
        mean, variance, epsilon = ctx.stats
        source = _as_numpy(x).reshape(mean.shape[0], -1)
        grad_x = np.empty(source.shape, np.float32)
        grad_weight, grad_bias = np.empty(source.shape[1], np.float32), np.empty(source.shape[1], np.float32)
        _ONEDNN.layer_norm_grad(source, _as_numpy(weight), _as_numpy(bias), mean, variance, epsilon,
                                _as_numpy(grad.contiguous()).reshape(source.shape), grad_x, grad_weight, grad_bias)
        return tuple(None if t.stop_gradient else paddle.from_dlpack(g).reshape(t.shape)
                     for t, g in ((x, grad_x), (weight, grad_weight), (bias, grad_bias)))


def _onednn_layer_norm(x, weight, bias, epsilon):
    """(output tensor, mean, variance): oneDNN's layer norm of x over its last axis."""
    source = _as_numpy(x).reshape(-1, x.shape[-1])
    out = np.empty(source.shape, np.float32)
    mean, variance = np.empty(source.shape[0], np.float32), np.empty(source.shape[0], np.float32)
    _ONEDNN.layer_norm(source, _as_numpy(weight), _as_numpy(bias), epsilon, out, mean, variance)
    return paddle.from_dlpack(out).reshape(x.shape), mean, variance


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm``; on CPU by oneDNN's kernels (Paddle's backward is ~35x slower on BERT-base shapes)."""

    def forward(self, x):
        if (not _onednn_route(x, "layer_norm") or self.weight is None or self.bias is None
                or len(self._normalized_shape) != 1):
            return super().forward(x)
        if x.stop_gradient and self.weight.stop_gradient and self.bias.stop_gradient:
            return _onednn_layer_norm(x, self.weight, self.bias, self._epsilon)[0]
        return _OneDNNLayerNorm.apply(x, self.weight, self.bias, self._epsilon)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (upscale in train); on CPU the keep-mask is drawn by numpy's PCG64.

    The numpy generator is seeded with a number drawn from Paddle's generator, so the masks still
    follow ``paddle.seed`` and a checkpoint's saved Paddle RNG state (exact resume holds).
    """

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if not _numpy_route(x, "dropout") or self.mode != "upscale_in_train" or self.axis is not None:
            return super().forward(x)
        seed = int(paddle.randint(0, 2**31 - 1, [1]).item())
        mask = (np.random.default_rng(seed).random(x.shape, dtype=np.float32) >= self.p).astype(np.float32)
        mask *= np.float32(1.0 / (1.0 - self.p))
        return x * paddle.from_dlpack(mask)  # shares the numpy buffer, no copy


class VisualBertEmbeddings(nn.Layer):
    def __init__(self, config):
        super().__init__()
        # No padding_idx anywhere: Paddle would force that row's output to zero, PyTorch does not.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.visual_projection = Linear(config.visual_embedding_dim, config.hidden_size)
        self.special_visual_initialize = config.special_visual_initialize
        self.copy_text_tables_to_visual()

    def copy_text_tables_to_visual(self):
        """The paper's initialisation: visual segment/position tables start as the text ones."""
        if self.special_visual_initialize:
            self.visual_token_type_embeddings.weight.set_value(self.token_type_embeddings.weight.clone())
            self.visual_position_embeddings.weight.set_value(self.position_embeddings.weight.clone())

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                visual_embeds=None, visual_token_type_ids=None, image_text_alignment=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, text_len = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = paddle.arange(text_len, dtype="int64").unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = paddle.zeros([batch, text_len], dtype="int64")
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)

        if visual_embeds is not None:
            num_regions = visual_embeds.shape[1]
            if visual_token_type_ids is None:
                visual_token_type_ids = paddle.ones([batch, num_regions], dtype="int64")
            # Every region sits at visual position 0; alignment adds the mean text position of its words.
            visual_position = self.visual_position_embeddings(paddle.zeros([batch, num_regions], dtype="int64"))
            if image_text_alignment is not None:
                if image_text_alignment.shape[1] < num_regions:
                    raise ValueError(
                        f"image_text_alignment covers {image_text_alignment.shape[1]} regions, "
                        f"visual_embeds has {num_regions}"
                    )
                # Detector fine-tuning can pad the alignment longer than the regions kept.
                alignment = image_text_alignment[:, :num_regions]
                valid = (alignment != -1).astype(embeddings.dtype)
                aligned = self.position_embeddings(paddle.clip(alignment, min=0)) * valid.unsqueeze(-1)
                count = paddle.clip(valid.sum(axis=2, keepdim=True), min=1.0)
                visual_position = aligned.sum(axis=2) / count + visual_position
            visual = (self.visual_projection(visual_embeds) + visual_position
                      + self.visual_token_type_embeddings(visual_token_type_ids))
            embeddings = paddle.concat([embeddings, visual], axis=1)

        return self.dropout(self.LayerNorm(embeddings))


class VisualBertSelfAttention(nn.Layer):
    # Paddle's fused scaled-dot-product attention on accelerators whenever the probabilities are
    # not returned; set False to force the batched-matmul path everywhere. On CPU Paddle has no
    # fused kernel (the call falls back to a slower matmul/softmax composition), so the CPU always
    # takes the batched-matmul path (BENCHMARKS.md).
    use_fused = True

    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = Linear(config.hidden_size, all_head_size)
        self.key = Linear(config.hidden_size, all_head_size)
        self.value = Linear(config.hidden_size, all_head_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def _fused(self, hidden_states, attention_bias, queries):
        """The same math through Paddle's fused kernel, when the probabilities are not wanted.

        Checked against the batched-matmul path to 1e-5 (tests/test_modeling.py).
        """
        heads, size = self.num_attention_heads, self.attention_head_size
        context = F.scaled_dot_product_attention(
            self.query(queries).reshape(queries.shape[:2] + [heads, size]),
            self.key(hidden_states).reshape(hidden_states.shape[:2] + [heads, size]),
            self.value(hidden_states).reshape(hidden_states.shape[:2] + [heads, size]),
            attn_mask=attention_bias, dropout_p=self.dropout.p, training=self.training,
        )
        return context.reshape(queries.shape[:2] + [-1])

    def forward(self, hidden_states, attention_bias=None, head_mask=None, output_attentions=False,
                query_states=None):
        """``query_states`` [B, Lq, hidden]: attend from these instead of from every position (all
        of ``hidden_states`` still serve as keys and values); ``attention_bias`` must then
        broadcast to [B, heads, Lq, L]."""
        queries = hidden_states if query_states is None else query_states
        if (self.use_fused and not output_attentions and head_mask is None
                and not _eager_on_cpu(hidden_states)):
            return self._fused(hidden_states, attention_bias, queries), None
        batch, length = hidden_states.shape[:2]
        q_len = queries.shape[1]
        heads, size = self.num_attention_heads, self.attention_head_size

        # Heads folded into the batch axis: [B, L, H*d] -> [B*H, L, d], keys already transposed to
        # [B*H, d, L] so that both products are plain batched GEMMs.
        def split(x, perm):
            x = _permute(x.reshape([batch, -1, heads, size]), perm)
            return x.reshape([batch * heads] + x.shape[2:])

        query = split(self.query(queries), [0, 2, 1, 3])
        key_t = split(self.key(hidden_states), [0, 2, 3, 1])
        value = split(self.value(hidden_states), [0, 2, 1, 3])
        scores = paddle.bmm(query, key_t).reshape([batch, heads, q_len, length])
        probs = self.dropout(_attention_softmax(scores, attention_bias, 1.0 / math.sqrt(size)))
        if head_mask is not None:
            probs = probs * head_mask
        context = paddle.bmm(probs.reshape([batch * heads, q_len, length]), value)
        context = _permute(context.reshape([batch, heads, q_len, size]), [0, 2, 1, 3])
        return context.reshape([batch, q_len, heads * size]), (probs if output_attentions else None)


class VisualBertAttention(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.self = VisualBertSelfAttention(config)
        self.output = VisualBertOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_bias=None, head_mask=None, output_attentions=False,
                query_states=None):
        context, probs = self.self(hidden_states, attention_bias, head_mask, output_attentions, query_states)
        return self.output(context, hidden_states if query_states is None else query_states), probs


class VisualBertIntermediate(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states):
        return self.act(self.dense(hidden_states))


class VisualBertOutput(nn.Layer):
    """Project back to hidden size, dropout, add the residual, LayerNorm: after attention
    (``attention.output``, from hidden size) and after the feed-forward (``output``, from intermediate)."""

    def __init__(self, config, input_size):
        super().__init__()
        self.dense = Linear(input_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class VisualBertLayer(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.attention = VisualBertAttention(config)
        self.intermediate = VisualBertIntermediate(config)
        self.output = VisualBertOutput(config, config.intermediate_size)

    def forward(self, hidden_states, attention_bias=None, head_mask=None, output_attentions=False,
                query_states=None):
        attended, probs = self.attention(hidden_states, attention_bias, head_mask, output_attentions, query_states)
        return self.output(self.intermediate(attended), attended), probs


class VisualBertEncoder(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.LayerList([VisualBertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_bias=None, head_mask=None, output_attentions=False,
                output_hidden_states=False, last_layer_positions=None):
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            layer_head_mask = None if head_mask is None else head_mask[i]
            if last_layer_positions is not None and i == len(self.layer) - 1:
                hidden_states, probs = layer(hidden_states, attention_bias, layer_head_mask, output_attentions,
                                             _gather_positions(hidden_states, last_layer_positions))
            else:
                hidden_states, probs = layer(hidden_states, attention_bias, layer_head_mask, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return hidden_states, all_hidden, all_attentions


class VisualBertPooler(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return paddle.tanh(self.dense(hidden_states[:, 0]))


class VisualBertPredictionHeadTransform(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.act(self.dense(hidden_states)))


class VisualBertLMPredictionHead(nn.Layer):
    """MLM decoder. Tied: the caller passes the word-embedding table [vocab, hidden] as decoder.

    Untied (``tie_word_embeddings=False``, and always in the region head, as in ``transformers``)
    it owns ``decoder.weight``.
    """

    def __init__(self, config, tied):
        super().__init__()
        self.transform = VisualBertPredictionHeadTransform(config)
        self.decoder = None if tied else Linear(config.hidden_size, config.vocab_size, bias_attr=False)
        self.bias = self.create_parameter([config.vocab_size], is_bias=True)

    def forward(self, hidden_states, word_embeddings=None):
        hidden_states = self.transform(hidden_states)
        if self.decoder is None:
            return paddle.matmul(hidden_states, word_embeddings, transpose_y=True) + self.bias
        return self.decoder(hidden_states) + self.bias


class VisualBertPreTrainingHeads(nn.Layer):
    def __init__(self, config, tied):
        super().__init__()
        self.predictions = VisualBertLMPredictionHead(config, tied)
        self.seq_relationship = Linear(config.hidden_size, 2)


class VisualBertPretrainedModel(PretrainedModel):
    """Weight init, the released-name registry and from_pretrained's offline message."""

    config_class = VisualBertConfig
    base_model_prefix = "visual_bert"
    pretrained_init_configuration = VisualBertConfig.pretrained_init_configuration
    pretrained_resource_files_map = {"model_state": {}}

    def _init_weights(self, layer):
        std = self.config.initializer_range
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            layer.weight.set_value(paddle.normal(0.0, std, layer.weight.shape).astype(layer.weight.dtype))
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            layer.bias.set_value(paddle.zeros_like(layer.bias))
        elif isinstance(layer, nn.LayerNorm):
            layer.weight.set_value(paddle.ones_like(layer.weight))
            layer.bias.set_value(paddle.zeros_like(layer.bias))
        elif isinstance(layer, VisualBertLMPredictionHead):
            layer.bias.set_value(paddle.zeros_like(layer.bias))
        elif isinstance(layer, VisualBertEmbeddings):
            # apply() visits children first, so the text tables were just re-drawn: copy them again
            # or the paper's initialisation is silently lost (transformers loses it this way).
            layer.copy_text_tables_to_visual()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        name = str(pretrained_model_name_or_path)
        if name.startswith("uclanlp/"):
            name = name[len("uclanlp/"):]
        if name in RELEASED_MODELS and not os.path.isdir(pretrained_model_name_or_path):
            from paddlenlp.utils.env import MODEL_HOME

            local = os.path.join(MODEL_HOME, name)
            if not os.path.isdir(local):
                raise FileNotFoundError(
                    f"{name}: no Paddle weights are published for this model; download the HuggingFace "
                    f"checkpoint uclanlp/{name} and run `python -m visualbert.convert --src <hf_dir> "
                    f"--dst {local}` (or pass any converted directory)"
                )
            pretrained_model_name_or_path = local
        if kwargs.get("state_dict") is None:
            # PaddleNLP would paddle.load (plain pickle) the weights: read them without trusting them
            from .safeload import load_pretrained_weights

            kwargs["state_dict"] = load_pretrained_weights(pretrained_model_name_or_path,
                                                           use_safetensors=kwargs.get("use_safetensors") is not False)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def _finish(output, return_dict):
    return output if return_dict is None or return_dict else output.to_tuple()


class VisualBertModel(VisualBertPretrainedModel):
    """Text + region embeddings through one BERT encoder.

    ``bypass_transformer``: the text runs alone through the encoder (text mask only), the regions'
    embeddings are appended to its output and one extra joint layer (``additional_layer``) sees
    both. ``hidden_states``/``attentions`` then hold the text encoder's entries plus the joint
    layer's. (``transformers``' version of this path indexes the mask wrongly and crashes.)

    ``last_layer_positions`` (int [B, P], optional): run the last layer only at these positions, the
    ones a head reads (every position still serves as key and value there), so a classifier over
    one token does not pay for the whole last layer. ``last_hidden_state`` is then [B, P, hidden]
    and ``pooler_output`` None; it cannot be combined with ``output_hidden_states`` or
    ``output_attentions``, which ask for every position.
    """

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = VisualBertEncoder(config)
        self.pooler = VisualBertPooler(config) if add_pooling_layer else None
        self.bypass_transformer = config.bypass_transformer
        if self.bypass_transformer:
            self.additional_layer = VisualBertLayer(config)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _head_mask(self, head_mask, dtype):
        if head_mask is None:
            return None
        head_mask = paddle.to_tensor(head_mask).astype(dtype)
        if head_mask.ndim == 1:
            head_mask = head_mask.unsqueeze(0).expand([self.config.num_hidden_layers, -1])
        return head_mask.reshape([self.config.num_hidden_layers, 1, -1, 1, 1])

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                last_layer_positions=None):
        output_attentions = bool(output_attentions)
        output_hidden_states = bool(output_hidden_states)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if last_layer_positions is not None and (output_attentions or output_hidden_states):
            raise ValueError("last_layer_positions cannot be combined with output_attentions/output_hidden_states")
        batch, text_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if attention_mask is None:
            attention_mask = paddle.ones([batch, text_len], dtype="int64")
        full_mask = attention_mask
        if visual_embeds is not None:
            if visual_attention_mask is None:
                visual_attention_mask = paddle.ones(visual_embeds.shape[:2], dtype="int64")
            full_mask = paddle.concat([attention_mask.astype("int64"), visual_attention_mask.astype("int64")], axis=1)

        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                                           visual_embeds, visual_token_type_ids, image_text_alignment)
        dtype = embedding_output.dtype
        full_bias = _mask_bias(full_mask, dtype)

        if self.bypass_transformer and visual_embeds is not None:
            text_out, hidden, attentions = self.encoder(
                embedding_output[:, :text_len], _mask_bias(attention_mask, dtype),
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            )
            joint = paddle.concat([text_out, embedding_output[:, text_len:]], axis=1)
            queries = None if last_layer_positions is None else _gather_positions(joint, last_layer_positions)
            sequence_output, probs = self.additional_layer(joint, full_bias, None, output_attentions, queries)
            if output_hidden_states:
                hidden.append(sequence_output)
            if output_attentions:
                attentions.append(probs)
        else:
            sequence_output, hidden, attentions = self.encoder(
                embedding_output, full_bias, self._head_mask(head_mask, dtype), output_attentions, output_hidden_states,
                last_layer_positions,
            )
        pooled_output = None
        if self.pooler is not None and last_layer_positions is None:
            pooled_output = self.pooler(sequence_output)
        return _finish(BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        ), return_dict)


@dataclass
class VisualBertForPreTrainingOutput(ModelOutput):
    """``transformers``' pre-training output plus the two loss terms, for separate logging."""

    loss: Optional[paddle.Tensor] = None
    prediction_logits: paddle.Tensor = None
    seq_relationship_logits: paddle.Tensor = None
    hidden_states: Optional[Tuple[paddle.Tensor]] = None
    attentions: Optional[Tuple[paddle.Tensor]] = None
    masked_lm_loss: Optional[paddle.Tensor] = None
    sentence_image_loss: Optional[paddle.Tensor] = None


def _encoder_kwargs(kw):
    keys = ("attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds", "visual_embeds",
            "visual_attention_mask", "visual_token_type_ids", "image_text_alignment", "output_attentions",
            "output_hidden_states")
    return {k: kw.get(k) for k in keys}


def _mean_ignoring(logits, labels, ignore_index=-100):
    """Cross-entropy averaged over the labels that are not ``ignore_index``.

    Paddle's own ``reduction="mean"`` divides by every label, ignored ones included.
    """
    per_token = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    count = (labels != ignore_index).astype(per_token.dtype).sum()
    return per_token.sum() / paddle.clip(count, min=1.0)


def _soft_target_kl(logits, targets):
    """KL(targets || softmax(logits)) over the last axis, summed, divided by dim 0 ('batchmean').

    Written out instead of F.kl_div so that zero targets contribute exactly 0, as torch's does.
    """
    log_probs = F.log_softmax(logits, axis=-1)
    targets = targets.astype(log_probs.dtype)
    safe = paddle.where(targets > 0, targets, paddle.ones_like(targets))
    pointwise = paddle.where(targets > 0, targets * (paddle.log(safe) - log_probs), paddle.zeros_like(targets))
    return pointwise.sum() / logits.shape[0]


class VisualBertForPreTraining(VisualBertPretrainedModel):
    """Masked language modelling + sentence-image matching (label 1 = the caption matches)."""

    def __init__(self, config):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.cls = VisualBertPreTrainingHeads(config, tied=config.tie_word_embeddings)

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def _decoder_table(self):
        return self.visual_bert.embeddings.word_embeddings.weight

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None, sentence_image_labels=None, predict_masked_only=False):
        """``labels``: MLM targets, -100 = ignore, of length T (regions are then ignored) or T+V.

        ``predict_masked_only``: with labels, decode only the positions whose label is not -100;
        ``prediction_logits`` is then [num_labelled, vocab] and the loss equals the full one.
        """
        outputs = self.visual_bert(input_ids, return_dict=True, **_encoder_kwargs(locals()))
        sequence_output, pooled_output = outputs.last_hidden_state, outputs.pooler_output
        seq_relationship_logits = self.cls.seq_relationship(pooled_output)
        total_len = sequence_output.shape[1]

        masked_lm_loss = sentence_image_loss = None
        if labels is not None:
            labels = labels.astype("int64")
            if labels.shape[1] != total_len:
                text_len = total_len - (visual_embeds.shape[1] if visual_embeds is not None else 0)
                if labels.shape[1] != text_len:
                    raise ValueError(f"labels have length {labels.shape[1]}; expected the text length or {total_len}")
                pad = paddle.full([labels.shape[0], total_len - labels.shape[1]], -100, dtype="int64")
                labels = paddle.concat([labels, pad], axis=1)
        if labels is not None and predict_masked_only:
            flat_labels = labels.reshape([-1])
            picked = paddle.nonzero(flat_labels != -100).reshape([-1])
            hidden = paddle.gather(sequence_output.reshape([-1, sequence_output.shape[-1]]), picked)
            prediction_logits = self.cls.predictions(hidden, self._decoder_table())
            if picked.shape[0] == 0:
                masked_lm_loss = prediction_logits.sum() * 0.0
            else:
                masked_lm_loss = F.cross_entropy(prediction_logits, paddle.gather(flat_labels, picked))
        else:
            prediction_logits = self.cls.predictions(sequence_output, self._decoder_table())
            if labels is not None:
                masked_lm_loss = _mean_ignoring(prediction_logits.reshape([-1, prediction_logits.shape[-1]]),
                                                labels.reshape([-1]))
        if sentence_image_labels is not None:
            sentence_image_loss = F.cross_entropy(seq_relationship_logits,
                                                  sentence_image_labels.reshape([-1]).astype("int64"))
        losses = [x for x in (masked_lm_loss, sentence_image_loss) if x is not None]
        return _finish(VisualBertForPreTrainingOutput(
            loss=sum(losses[1:], losses[0]) if losses else None,
            prediction_logits=prediction_logits,
            seq_relationship_logits=seq_relationship_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            masked_lm_loss=masked_lm_loss,
            sentence_image_loss=sentence_image_loss,
        ), return_dict)


class VisualBertForQuestionAnswering(VisualBertPretrainedModel):
    """VQA: classify the hidden state of the ``[MASK]`` before the last ``[SEP]`` (index sum(mask)-2).

    ``logits`` are always raw scores (``transformers`` returns log-softmax when labels are given).
    Losses against soft targets [B, num_labels]: ``loss_type="kl"`` (default, as ``transformers``):
    KL-div, batchmean, of log_softmax(logits); ``"bce"``: BCE-with-logits averaged over all
    elements then multiplied by num_labels, i.e. summed over answers and averaged over questions
    (the MMF / original VisualBERT convention).
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None, loss_type="kl"):
        batch, text_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        lengths = (attention_mask.astype("int64").sum(axis=1) if attention_mask is not None
                   else paddle.full([batch], text_len, dtype="int64"))
        positions = (lengths - 2).unsqueeze(1)
        every_position = bool(output_attentions or output_hidden_states)
        outputs = self.visual_bert(input_ids, return_dict=True, **_encoder_kwargs(locals()),
                                   last_layer_positions=None if every_position else positions)
        picked = outputs.last_hidden_state
        if every_position:
            picked = _gather_positions(picked, positions)
        logits = self.cls(self.dropout(picked[:, 0]))

        loss = None
        if labels is not None:
            labels = labels.astype(logits.dtype)
            if loss_type == "kl":
                loss = _soft_target_kl(logits, labels)
            elif loss_type == "bce":
                loss = F.binary_cross_entropy_with_logits(logits, labels) * self.num_labels
            else:
                raise ValueError(f"loss_type must be 'kl' or 'bce', not {loss_type!r}")
        return _finish(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions), return_dict)


class VisualBertForVisualReasoning(VisualBertPretrainedModel):
    """NLVR2: pooled output -> dropout -> Linear(hidden, num_labels); labels are class ids [B]."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None):
        # The pooler reads position 0 ([CLS]) only, so the last layer runs only there.
        every_position = bool(output_attentions or output_hidden_states)
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        outputs = self.visual_bert(input_ids, return_dict=True, **_encoder_kwargs(locals()),
                                   last_layer_positions=None if every_position else paddle.zeros([batch, 1], "int64"))
        pooled = outputs.pooler_output if every_position else self.visual_bert.pooler(outputs.last_hidden_state)
        logits = self.cls(self.dropout(pooled))
        loss = None if labels is None else F.cross_entropy(logits, labels.reshape([-1]).astype("int64"))
        return _finish(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions), return_dict)


class VisualBertForMultipleChoice(VisualBertPretrainedModel):
    """VCR: inputs carry a choice axis ([B, C, T], visual [B, C, V, D]); logits [B, C].

    Unlike ``transformers``, ``image_text_alignment`` [B, C, V, K] is flattened with the rest.
    """

    def __init__(self, config):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None):
        kw = _encoder_kwargs(locals())
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        trailing = {"inputs_embeds": 2, "visual_embeds": 2, "image_text_alignment": 2}
        for name in ("attention_mask", "token_type_ids", "position_ids", "inputs_embeds", "visual_embeds",
                     "visual_attention_mask", "visual_token_type_ids", "image_text_alignment"):
            if kw[name] is not None:
                keep = trailing.get(name, 1)
                kw[name] = kw[name].reshape([-1] + list(kw[name].shape[-keep:]))
        flat_ids = None if input_ids is None else input_ids.reshape([-1, input_ids.shape[-1]])
        outputs = self.visual_bert(flat_ids, return_dict=True, **kw)
        logits = self.cls(self.dropout(outputs.pooler_output)).reshape([-1, num_choices])
        loss = None if labels is None else F.cross_entropy(logits, labels.reshape([-1]).astype("int64"))
        return _finish(MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                 attentions=outputs.attentions), return_dict)


class VisualBertRegionToPhraseAttention(nn.Layer):
    """One attention head scoring each selected phrase position against every region."""

    def __init__(self, config):
        super().__init__()
        head_size = config.hidden_size // config.num_attention_heads
        self.attention_head_size = head_size
        self.query = Linear(config.hidden_size, head_size)
        self.key = Linear(config.hidden_size, head_size)
        # Unused by the scores; kept so checkpoints trained with it load without unexpected keys.
        self.value = Linear(config.hidden_size, head_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def forward(self, query, key, visual_attention_mask):
        scores = paddle.matmul(self.query(query), self.key(key), transpose_y=True) / math.sqrt(self.attention_head_size)
        return scores + _mask_bias(visual_attention_mask, scores.dtype).squeeze(1)


class VisualBertForRegionToPhraseAlignment(VisualBertPretrainedModel):
    """Flickr30k Entities: logits [B, P, V] from ``region_to_phrase_position`` [B, P] (-1 = padding).

    Loss: KL-div (batchmean) of log_softmax(logits) against ``labels`` [B, P, V], as
    ``transformers``. The MLM heads are carried (untied, as there) but not used.
    """

    def __init__(self, config):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = VisualBertPreTrainingHeads(config, tied=False)
        self.attention = VisualBertRegionToPhraseAttention(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                region_to_phrase_position=None, labels=None):
        if visual_embeds is None or region_to_phrase_position is None:
            raise ValueError("region-to-phrase alignment needs visual_embeds and region_to_phrase_position")
        kw = _encoder_kwargs(locals())
        if visual_attention_mask is None:
            kw["visual_attention_mask"] = visual_attention_mask = paddle.ones(visual_embeds.shape[:2], dtype="int64")
        outputs = self.visual_bert(input_ids, return_dict=True, **kw)
        sequence_output = outputs.last_hidden_state
        positions = paddle.clip(region_to_phrase_position.astype("int64"), min=0)
        gather_index = positions.unsqueeze(-1).expand([-1, -1, sequence_output.shape[-1]])
        phrases = paddle.take_along_axis(sequence_output, gather_index, axis=1)
        regions = sequence_output[:, sequence_output.shape[1] - visual_embeds.shape[1]:]
        logits = self.attention(phrases, regions, visual_attention_mask)
        loss = None if labels is None else _soft_target_kl(logits, labels)
        return _finish(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions), return_dict)
