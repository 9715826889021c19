"""GELU, softmax and LayerNorm on CPU through oneDNN, the JIT-compiled kernel library Paddle's CPU
wheel ships.

Paddle's eager mode runs its own CPU kernels for these, several times slower than oneDNN's
vectorised ones on the BERT-base shapes (BENCHMARKS.md has the measurements); eager mode never
picks oneDNN kernels itself. This module calls oneDNN's eltwise, softmax and layer-normalization
primitives through its C API. ``load()`` returns None where the wheel has no oneDNN library (other
platforms, GPU builds) or not the exact one this binding was written for (``WRITTEN_FOR``, every
entry point present, a numeric self-check), and visualbert.cpu then keeps Paddle's kernels.

Arrays are float32, C-contiguous numpy arrays (Paddle tensors seen through DLPack); the work runs
on oneDNN's OpenMP threads (OMP_NUM_THREADS, as Paddle's own kernels).

Several Python threads may run the same model: a primitive's memory objects are pointed at the
caller's arrays and then executed, so each cached primitive pair runs under its own lock, with its
own stream and scratchpad (oneDNN's shared default scratchpad belongs to the thread that created
the primitive, and the same primitive must not run twice at once).
"""
import ctypes
import functools
import math
import os
import sys
import threading

import numpy as np
import paddle

LIBRARY = os.path.join(os.path.dirname(paddle.__file__), "libs", "libdnnl.so.3")

# oneDNN 3.x C API constants (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h).
_SUCCESS, _CPU_ENGINE, _IN_ORDER_STREAM, _F32 = 0, 1, 1, 3
_FORWARD_TRAINING, _BACKWARD, _ELTWISE_GELU_ERF, _SOFTMAX_ACCURATE = 64, 128, 0x31, 0x30000
_USE_SCALE, _USE_SHIFT = 0x2, 0x4
_ARG_SRC, _ARG_DST, _ARG_DIFF_SRC, _ARG_DIFF_DST = 1, 17, 129, 145
_ARG_MEAN, _ARG_VARIANCE, _ARG_SCALE, _ARG_SHIFT, _ARG_DIFF_SCALE, _ARG_DIFF_SHIFT = 49, 50, 51, 52, 255, 256
_ARG_SCRATCHPAD, _QUERY_SCRATCHPAD_MD, _SCRATCHPAD_USER, _MEMORY_ALLOCATE = 80, 136, 1, ctypes.c_void_p(-1)
_MAX_NDIMS = 12
CACHED_SHAPES = 64  # primitive pairs kept, one per operation and shape (text length varies by batch)

_handle = ctypes.c_void_p
_Dims = ctypes.c_int64 * _MAX_NDIMS


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _handle)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


class _Primitives:
    """Forward and backward primitives of one operation on one shape, with what running them needs:
    a memory object per argument (pointed at the caller's arrays at each run), a scratchpad per
    direction, a stream, and the lock that makes pointing and running one step."""

    def __init__(self, forward, backward, memories, scratchpads, stream, owned):
        self.forward, self.backward, self.memories, self.scratchpads = forward, backward, memories, scratchpads
        self.stream, self.owned = stream, owned  # owned: [(destroy function, handle)] in destruction order
        self.lock = threading.Lock()
        self.destroyed = False


class OneDNN:
    """One CPU engine; forward/backward primitives built once per operation and shape."""

    def __init__(self, lib):
        self.lib = lib
        lib.dnnl_engine_create.argtypes = [ctypes.POINTER(_handle), ctypes.c_int, ctypes.c_size_t]
        lib.dnnl_stream_create.argtypes = [ctypes.POINTER(_handle), _handle, ctypes.c_uint]
        lib.dnnl_memory_desc_create_with_strides.argtypes = [ctypes.POINTER(_handle), ctypes.c_int, _Dims,
                                                             ctypes.c_int, _Dims]
        lib.dnnl_primitive_attr_create.argtypes = [ctypes.POINTER(_handle)]
        lib.dnnl_primitive_attr_set_scratchpad_mode.argtypes = [_handle, ctypes.c_int]
        lib.dnnl_primitive_desc_query_md.argtypes = [_handle, ctypes.c_int, ctypes.c_int]
        lib.dnnl_primitive_desc_query_md.restype = _handle
        lib.dnnl_eltwise_forward_primitive_desc_create.argtypes = [
            ctypes.POINTER(_handle), _handle, ctypes.c_int, ctypes.c_int, _handle, _handle, ctypes.c_float,
            ctypes.c_float, _handle]
        lib.dnnl_eltwise_backward_primitive_desc_create.argtypes = [
            ctypes.POINTER(_handle), _handle, ctypes.c_int, _handle, _handle, _handle, ctypes.c_float,
            ctypes.c_float, _handle, _handle]
        lib.dnnl_softmax_forward_primitive_desc_create.argtypes = [
            ctypes.POINTER(_handle), _handle, ctypes.c_int, ctypes.c_int, _handle, _handle, ctypes.c_int, _handle]
        lib.dnnl_softmax_backward_primitive_desc_create.argtypes = [
            ctypes.POINTER(_handle), _handle, ctypes.c_int, _handle, _handle, _handle, ctypes.c_int, _handle,
            _handle]
        lib.dnnl_layer_normalization_forward_primitive_desc_create.argtypes = [
            ctypes.POINTER(_handle), _handle, ctypes.c_int, _handle, _handle, _handle, ctypes.c_float, ctypes.c_uint,
            _handle]
        lib.dnnl_layer_normalization_backward_primitive_desc_create.argtypes = [
            ctypes.POINTER(_handle), _handle, ctypes.c_int, _handle, _handle, _handle, _handle, ctypes.c_float,
            ctypes.c_uint, _handle, _handle]
        lib.dnnl_primitive_create.argtypes = [ctypes.POINTER(_handle), _handle]
        lib.dnnl_memory_create.argtypes = [ctypes.POINTER(_handle), _handle, _handle, _handle]
        lib.dnnl_memory_set_data_handle.argtypes = [_handle, _handle]
        lib.dnnl_primitive_execute.argtypes = [_handle, _handle, ctypes.c_int, ctypes.POINTER(_ExecArg)]
        lib.dnnl_stream_wait.argtypes = [_handle]
        for name in ("dnnl_primitive_destroy", "dnnl_primitive_desc_destroy", "dnnl_memory_destroy",
                     "dnnl_memory_desc_destroy", "dnnl_primitive_attr_destroy", "dnnl_stream_destroy"):
            getattr(lib, name).argtypes = [_handle]
        self.engine = self._create(lib.dnnl_engine_create, _CPU_ENGINE, 0)
        self.cache_size = CACHED_SHAPES
        self.primitives = {}  # (operation, shape, epsilon) -> _Primitives, oldest first
        self._cache_lock = threading.Lock()

    def _create(self, function, *args):
        out = _handle()
        status = function(ctypes.byref(out), *args)
        if status != _SUCCESS:
            raise RuntimeError(f"oneDNN {function.__name__} failed with status {status}")
        return out

    def _desc(self, *shape):
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        return self._create(self.lib.dnnl_memory_desc_create_with_strides, len(shape), _Dims(*shape), _F32,
                            _Dims(*strides))

    def _build(self, operation, shape, epsilon):
        lib, engine = self.lib, self.engine
        data = self._desc(*shape)
        descs = {arg: data for arg in (_ARG_SRC, _ARG_DST, _ARG_DIFF_SRC, _ARG_DIFF_DST)}
        # Scratchpads of their own (the library's default one is shared by every primitive created in
        # one thread, so two threads could run on the same one).
        attr = self._create(lib.dnnl_primitive_attr_create)
        lib.dnnl_primitive_attr_set_scratchpad_mode(attr, _SCRATCHPAD_USER)
        if operation == "gelu":
            forward_pd = self._create(lib.dnnl_eltwise_forward_primitive_desc_create, engine, _FORWARD_TRAINING,
                                      _ELTWISE_GELU_ERF, data, data, 0.0, 0.0, attr)
            backward_pd = self._create(lib.dnnl_eltwise_backward_primitive_desc_create, engine,
                                       _ELTWISE_GELU_ERF, data, data, data, 0.0, 0.0, forward_pd, attr)
        elif operation == "softmax":  # over the last axis
            axis = len(shape) - 1
            forward_pd = self._create(lib.dnnl_softmax_forward_primitive_desc_create, engine, _FORWARD_TRAINING,
                                      _SOFTMAX_ACCURATE, data, data, axis, attr)
            backward_pd = self._create(lib.dnnl_softmax_backward_primitive_desc_create, engine,
                                       _SOFTMAX_ACCURATE, data, data, data, axis, forward_pd, attr)
        else:  # layer norm over the last axis of [rows, features], with scale and shift
            stats, params = self._desc(shape[0]), self._desc(shape[1])
            descs.update({_ARG_MEAN: stats, _ARG_VARIANCE: stats, _ARG_SCALE: params, _ARG_SHIFT: params,
                          _ARG_DIFF_SCALE: params, _ARG_DIFF_SHIFT: params})
            flags = _USE_SCALE | _USE_SHIFT
            forward_pd = self._create(lib.dnnl_layer_normalization_forward_primitive_desc_create, engine,
                                      _FORWARD_TRAINING, data, data, stats, epsilon, flags, attr)
            backward_pd = self._create(lib.dnnl_layer_normalization_backward_primitive_desc_create, engine,
                                       _BACKWARD, data, data, data, stats, epsilon, flags, forward_pd, attr)
        lib.dnnl_primitive_attr_destroy(attr)  # the primitive descriptors keep their own copy
        memories = {arg: self._create(lib.dnnl_memory_create, desc, engine, None) for arg, desc in descs.items()}
        # The scratchpad descriptors belong to the primitive descriptors (not destroyed here).
        scratchpads = [self._create(lib.dnnl_memory_create, lib.dnnl_primitive_desc_query_md(
            pd, _QUERY_SCRATCHPAD_MD, 0), engine, _MEMORY_ALLOCATE) for pd in (forward_pd, backward_pd)]
        forward = self._create(lib.dnnl_primitive_create, forward_pd)
        backward = self._create(lib.dnnl_primitive_create, backward_pd)
        stream = self._create(lib.dnnl_stream_create, engine, _IN_ORDER_STREAM)
        owned = ([(lib.dnnl_primitive_destroy, p) for p in (forward, backward)]
                 + [(lib.dnnl_memory_destroy, m) for m in list(memories.values()) + scratchpads]
                 + [(lib.dnnl_primitive_desc_destroy, pd) for pd in (forward_pd, backward_pd)]
                 + [(lib.dnnl_memory_desc_destroy, d) for d in {d.value: d for d in descs.values()}.values()]
                 + [(lib.dnnl_stream_destroy, stream)])
        return _Primitives(forward, backward, memories, scratchpads, stream, owned)

    def _cached(self, key):
        with self._cache_lock:
            if key not in self.primitives:
                while len(self.primitives) >= self.cache_size:
                    oldest = self.primitives.pop(next(iter(self.primitives)))
                    with oldest.lock:  # waits for a run of it in another thread to finish
                        for destroy, handle in oldest.owned:
                            destroy(handle)
                        oldest.destroyed = True
                self.primitives[key] = self._build(*key)
            return self.primitives[key]

    def _run(self, operation, shape, backward, bindings, epsilon=0.0):
        """Run the forward (or backward) primitive of ``operation`` on ``shape`` over numpy arrays."""
        for array in bindings.values():
            if array.dtype != np.float32 or not array.flags.c_contiguous:
                raise ValueError("oneDNN routes take C-contiguous float32 arrays")
        while True:
            entry = self._cached((operation, shape, epsilon))
            with entry.lock:
                if entry.destroyed:  # evicted by another thread between the look-up and the lock
                    continue
                args = (_ExecArg * (len(bindings) + 1))()
                for i, (arg, array) in enumerate(bindings.items()):
                    self.lib.dnnl_memory_set_data_handle(entry.memories[arg], array.ctypes.data)
                    args[i] = _ExecArg(arg, entry.memories[arg])
                args[len(bindings)] = _ExecArg(_ARG_SCRATCHPAD, entry.scratchpads[backward])
                status = self.lib.dnnl_primitive_execute(entry.backward if backward else entry.forward,
                                                         entry.stream, len(args), args)
                if status != _SUCCESS:
                    raise RuntimeError(f"oneDNN primitive failed with status {status}")
                self.lib.dnnl_stream_wait(entry.stream)
                return

    def gelu(self, x, out):
        """out = x * Phi(x) (Phi: the standard normal CDF, via erf); ``out`` may be ``x``."""
        # Elementwise, so any shape is one flat run of elements.
        self._run("gelu", (x.size,), False, {_ARG_SRC: x, _ARG_DST: out})

    def gelu_grad(self, x, grad, out):
        """out = grad * d GELU(x) / dx."""
        self._run("gelu", (x.size,), True, {_ARG_SRC: x, _ARG_DIFF_DST: grad, _ARG_DIFF_SRC: out})

    def softmax(self, x, out):
        """out = softmax(x) over the last axis; ``out`` may be ``x``."""
        self._run("softmax", (x.size // x.shape[-1], x.shape[-1]), False, {_ARG_SRC: x, _ARG_DST: out})

    def softmax_grad(self, probs, grad, out):
        """out = probs * (grad - sum(grad * probs)) over the last axis, the gradient of the scores."""
        self._run("softmax", (probs.size // probs.shape[-1], probs.shape[-1]), True,
                  {_ARG_DST: probs, _ARG_DIFF_DST: grad, _ARG_DIFF_SRC: out})

    def layer_norm(self, x, scale, shift, epsilon, out, mean, variance):
        """out = (x - mean) / sqrt(variance + epsilon) * scale + shift over the last axis of x [rows,
        features]; fills ``mean`` and ``variance`` [rows] for the backward."""
        self._run("layer_norm", x.shape, False, {_ARG_SRC: x, _ARG_SCALE: scale, _ARG_SHIFT: shift, _ARG_DST: out,
                                                 _ARG_MEAN: mean, _ARG_VARIANCE: variance}, epsilon)

    def layer_norm_grad(self, x, scale, shift, mean, variance, epsilon, grad, out, grad_scale, grad_shift):
        """Gradients of layer_norm: ``out`` for x, ``grad_scale`` and ``grad_shift`` for the parameters
        (oneDNN asks for ``shift`` here too)."""
        self._run("layer_norm", x.shape, True, {_ARG_SRC: x, _ARG_DIFF_DST: grad, _ARG_MEAN: mean,
                                                _ARG_VARIANCE: variance, _ARG_SCALE: scale, _ARG_SHIFT: shift,
                                                _ARG_DIFF_SRC: out, _ARG_DIFF_SCALE: grad_scale,
                                                _ARG_DIFF_SHIFT: grad_shift}, epsilon)


# The library this binding was written and tested against: the C API constants above are this
# version's, and a build that differs (another minor version, missing entry points) could take the
# same numbers to mean other things. Anything else falls back to Paddle's kernels.
WRITTEN_FOR = (3, 6)
_ENTRY_POINTS = (
    "dnnl_version", "dnnl_engine_create", "dnnl_stream_create", "dnnl_stream_wait", "dnnl_stream_destroy",
    "dnnl_memory_desc_create_with_strides", "dnnl_memory_desc_destroy", "dnnl_memory_create",
    "dnnl_memory_set_data_handle", "dnnl_memory_destroy", "dnnl_primitive_attr_create",
    "dnnl_primitive_attr_set_scratchpad_mode", "dnnl_primitive_attr_destroy", "dnnl_primitive_desc_query_md",
    "dnnl_primitive_desc_destroy", "dnnl_eltwise_forward_primitive_desc_create",
    "dnnl_eltwise_backward_primitive_desc_create", "dnnl_softmax_forward_primitive_desc_create",
    "dnnl_softmax_backward_primitive_desc_create", "dnnl_layer_normalization_forward_primitive_desc_create",
    "dnnl_layer_normalization_backward_primitive_desc_create", "dnnl_primitive_create", "dnnl_primitive_execute",
    "dnnl_primitive_destroy")


@functools.lru_cache(maxsize=None)
def load(path=LIBRARY):
    """The process's ``OneDNN`` over Paddle's bundled library (one per library, so its primitive
    cache is shared), or None where the library is missing or not the one this binding is for."""
    return open_library(path)


def open_library(path=LIBRARY):
    """A new ``OneDNN`` over the library at ``path``, or None where it is missing. A library that
    is not the oneDNN this binding was written for, lacks one of its entry points or fails the
    numeric self-check also gives None, after one line on stderr saying why."""
    if not os.path.exists(path):
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        return _refuse(path, f"cannot be opened ({e})")
    missing = [name for name in _ENTRY_POINTS if not hasattr(lib, name)]
    if missing:
        return _refuse(path, f"lacks {', '.join(missing)}")
    lib.dnnl_version.restype = ctypes.POINTER(_Version)
    version = lib.dnnl_version().contents
    if (version.major, version.minor) != WRITTEN_FOR:
        found = f"{version.major}.{version.minor}.{version.patch}"
        return _refuse(path, f"is oneDNN {found}, this binding was written for {'.'.join(map(str, WRITTEN_FOR))}")
    try:
        binding = OneDNN(lib)
        error = _self_check(binding)
    except RuntimeError as e:
        error = str(e)
    return _refuse(path, f"failed its self-check: {error}") if error else binding


def _refuse(path, why):
    print(f"note: {path} {why}; using Paddle's own CPU kernels for softmax, GELU and LayerNorm", file=sys.stderr)
    return None


def _self_check(binding):
    """Each operation once on a small input against numpy: constants that mean something else in the
    library would show here instead of in a model's outputs. Returns what differed, or None."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    out = np.empty_like(x)
    binding.gelu(x, out)
    erf = np.vectorize(math.erf)
    if not np.allclose(out, x * 0.5 * (1.0 + erf(x / math.sqrt(2.0))), atol=1e-5):
        return "GELU"
    binding.softmax(x, out)
    exp = np.exp(x - x.max(axis=-1, keepdims=True))
    if not np.allclose(out, exp / exp.sum(axis=-1, keepdims=True), atol=1e-6):
        return "softmax"
    scale, shift = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    mean, variance = np.empty(4, np.float32), np.empty(4, np.float32)
    binding.layer_norm(x, scale, shift, 1e-12, out, mean, variance)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * scale + shift
    if not np.allclose(out, expected, atol=1e-5):
        return "LayerNorm"
    return None
