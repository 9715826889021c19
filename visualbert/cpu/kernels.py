"""The CPU kernels behind visualbert.cpu's layers: numpy and oneDNN in place of slow Paddle kernels.

Paddle's CPU kernels for a few operations a BERT layer uses everywhere are far slower than the
arithmetic needs (measured on the BERT-base shapes, BENCHMARKS.md): the separate broadcasting add
F.linear does for the bias, the column sum that is the bias gradient (a GEMV does the same sum
far faster), dropout's per-element random draws, the transpose that splits and merges attention
heads (slower than numpy's copy of the same permutation), the attention softmax, GELU and the
LayerNorm backward (slower than oneDNN's). Each function here computes what the stock operation does, forward and backward, and
takes the route only on CPU tensors in eager mode above a size threshold; otherwise it calls the
stock operation.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
import paddle.nn.functional as F

# The oneDNN binding (visualbert.cpu.onednn) while a model is accelerated, None otherwise and where
# Paddle ships no oneDNN or another one than the binding was written for: then softmax runs in numpy
# and GELU and LayerNorm on Paddle's kernels.
ONEDNN = None

# Below these sizes (elements) a route's fixed cost, handing work to other threads and back,
# exceeds what it saves, and Paddle's kernel is faster (measured on BERT-base shapes at batch 1-16,
# BENCHMARKS.md); Paddle's transpose keeps up with numpy's copy longest.
ROUTE_MIN_ELEMENTS = {"dropout": 1, "softmax": 1 << 17, "gelu": 1 << 19, "layer_norm": 1 << 16, "permute": 1 << 21}


def eager_on_cpu(x):
    # Graphs traced by paddle.jit.to_static keep the stock ops: their optimiser does its own fusing.
    return paddle.in_dynamic_mode() and x.place.is_cpu_place()


def numpy_route(x, route):
    # The routes through numpy handle float32, what CPU training and inference compute in. Empty
    # tensors (a batch with nothing masked) stay with Paddle: numpy's strides for them are not Paddle's.
    return eager_on_cpu(x) and x.dtype == paddle.float32 and x.size >= max(1, ROUTE_MIN_ELEMENTS[route])


def onednn_route(x, route):
    return ONEDNN is not None and numpy_route(x, route)


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


def _as_numpy(x):
    return np.from_dlpack(x.detach())


# ---------------------------------------------------------------------------- attention softmax


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


def _softmax_into(scores, bias, scale, out):
    """out = softmax(scale * scores + bias) over the last axis, numpy arrays; ``out`` may be ``scores``.

    The scaling and the mask are numpy passes on Paddle's threads, the softmax is oneDNN's kernel
    (numpy's where Paddle ships no oneDNN).
    """
    if bias is None:
        _in_threads(lambda s, o: _scale_and_mask(s, None, o, scale), scores, out)
    else:
        _in_threads(lambda s, b, o: _scale_and_mask(s, b, o, scale), scores, np.broadcast_to(bias, scores.shape), out)
    if ONEDNN is not None:
        ONEDNN.softmax(out, out)
    else:
        _in_threads(_softmax_rows, out)


class _Softmax(paddle.autograd.PyLayer):
    """softmax(scale * scores + bias) over the last axis; ``bias`` (numpy) gets no gradient."""

    @staticmethod
    def forward(ctx, scores, bias, scale):
        source = _as_numpy(scores)
        out = np.empty(source.shape, np.float32)
        _softmax_into(source, bias, scale, out)
        probs = paddle.from_dlpack(out)
        ctx.save_for_backward(probs)
        ctx.scale = scale
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensor()
        probs, grad = _as_numpy(probs), _as_numpy(grad.contiguous())
        out = np.empty(probs.shape, np.float32)
        if ONEDNN is not None:
            ONEDNN.softmax_grad(probs, grad, out)
        else:
            _in_threads(_softmax_grad_rows, probs, grad, out)
        # The scores were scaled before the softmax.
        _in_threads(lambda o: np.multiply(o, np.float32(ctx.scale), out=o), out)
        return paddle.from_dlpack(out)


def attention_softmax(scores, bias, scale):
    """softmax(scale * scores + bias, axis=-1); scores [B, H, Lq, L], bias broadcastable to it."""
    if numpy_route(scores, "softmax") and (bias is None or bias.stop_gradient):
        bias = None if bias is None else _as_numpy(bias)
        if scores.stop_gradient:
            # Nothing differentiates through (inference): overwrite the scores, a fresh temporary,
            # rather than page-fault a new 40+ MB buffer per layer.
            in_place = _as_numpy(scores)
            _softmax_into(in_place, bias, scale, in_place)
            return scores
        return _Softmax.apply(scores, bias, scale)
    scores = scores * scale
    return F.softmax(scores if bias is None else scores + bias, axis=-1)


# ---------------------------------------------------------------------------- GELU


class _OneDNNGelu(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        out = np.empty(x.shape, np.float32)
        ONEDNN.gelu(_as_numpy(x), out)
        return paddle.from_dlpack(out)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensor()
        out = np.empty(x.shape, np.float32)
        ONEDNN.gelu_grad(_as_numpy(x), _as_numpy(grad.contiguous()), out)
        return paddle.from_dlpack(out)


def gelu(x):
    """Exact GELU (``F.gelu``), by oneDNN's kernel on CPU. Only ever applied to a fresh Linear output."""
    if not onednn_route(x, "gelu"):
        return F.gelu(x)
    if x.stop_gradient:
        # Nothing differentiates through (inference): overwrite the input, a fresh Linear output,
        # rather than page-fault a new buffer of batch x length x 3072 floats per layer.
        ONEDNN.gelu(_as_numpy(x), _as_numpy(x))
        return x
    return _OneDNNGelu.apply(x)


# ---------------------------------------------------------------------------- head permutes


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


def permute(x, perm):
    """``x.transpose(perm)``, contiguous."""
    if numpy_route(x, "permute"):
        return _NumpyPermute.apply(x, perm)
    return x.transpose(perm)


# ---------------------------------------------------------------------------- Linear


class LinearFunction(paddle.autograd.PyLayer):
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


# ---------------------------------------------------------------------------- LayerNorm


class LayerNormFunction(paddle.autograd.PyLayer):
    """Layer norm over the last axis with weight and bias, forward and backward by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, epsilon):
        out, mean, variance = layer_norm(x, weight, bias, epsilon)
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
        ONEDNN.layer_norm_grad(source, _as_numpy(weight), _as_numpy(bias), mean, variance, epsilon,
                               _as_numpy(grad.contiguous()).reshape(source.shape), grad_x, grad_weight, grad_bias)
        return tuple(None if t.stop_gradient else paddle.from_dlpack(g).reshape(t.shape)
                     for t, g in ((x, grad_x), (weight, grad_weight), (bias, grad_bias)))


def layer_norm(x, weight, bias, epsilon):
    """(output tensor, mean, variance): oneDNN's layer norm of x over its last axis."""
    source = _as_numpy(x).reshape(-1, x.shape[-1])
    out = np.empty(source.shape, np.float32)
    mean, variance = np.empty(source.shape[0], np.float32), np.empty(source.shape[0], np.float32)
    ONEDNN.layer_norm(source, _as_numpy(weight), _as_numpy(bias), epsilon, out, mean, variance)
    return paddle.from_dlpack(out).reshape(x.shape), mean, variance


# ---------------------------------------------------------------------------- dropout


def dropout_mask(shape, p):
    """A keep-mask scaled by 1 / (1 - p), drawn by numpy's PCG64 seeded from Paddle's generator, so
    the masks still follow ``paddle.seed`` and a checkpoint's saved Paddle RNG state."""
    seed = int(paddle.randint(0, 2**31 - 1, [1]).item())
    mask = (np.random.default_rng(seed).random(shape, dtype=np.float32) >= p).astype(np.float32)
    mask *= np.float32(1.0 / (1.0 - p))
    return paddle.from_dlpack(mask)  # shares the numpy buffer, no copy
