"""Faster CPU training and inference for a VisualBERT model: ``accelerate(model)``, ``restore(model)``.

``accelerate`` turns the model's sublayers, in place, into the subclasses in ``layers`` (kernels
in ``kernels``, oneDNN through ``onednn``); ``restore`` turns them back. The layer objects stay
the same, so parameter names, the state dict, an optimizer's parameter list and checkpoints are
untouched, and the outputs are the stock model's (tests/test_cpu.py). On a GPU tensor or inside
a traced graph the swapped layers are the stock ones.

The process-wide settings the CPU layers want are made by ``accelerate`` and undone by the
``restore`` of the last accelerated model; importing this package changes nothing:

- Paddle's strided views off, on a CPU-only build (``FLAGS_use_stride_kernel``): with them every
  transpose is a view that the next kernel copies back to contiguous memory, far slower than the
  transpose kernel it replaced (BENCHMARKS.md), as in Paddle 2.
- Intel OpenMP's workers sleep at once after a parallel region instead of spinning 200 ms
  (``kmp_set_blocktime(0)``): the numpy kernels run their own threads between Paddle's GEMMs and
  a worker spinning on the other core slows them down, while the GEMMs lose nothing measurable. A ``KMP_BLOCKTIME`` the user set is left alone.
- the oneDNN library inside Paddle's wheel is opened for softmax, GELU and LayerNorm.
"""
import ctypes
import os
import weakref

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..modeling import VisualBertSelfAttention
from . import kernels, onednn
from .layers import Dropout, LayerNorm, Linear, SelfAttention

__all__ = ["accelerate", "restore"]

_CPU_CLASS = {nn.Linear: Linear, nn.LayerNorm: LayerNorm, nn.Dropout: Dropout, VisualBertSelfAttention: SelfAttention}
_STOCK_CLASS = {cpu: stock for stock, cpu in _CPU_CLASS.items()}

OPENMP_LIBRARY = os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")

# id(model) -> weakref.finalize, for the models accelerate() was called on and restore() was not:
# the process settings are changed while there is one (a model collected without restore() counts
# as restored).
_accelerated = {}
_saved = None  # the process settings from before, while they are changed


def accelerate(model):
    """Swap ``model``'s sublayers for the CPU layers, in place, and make the process settings they
    want (see the module docstring). Every ``nn.Linear``, ``nn.LayerNorm``, ``nn.Dropout`` and
    self-attention becomes its CPU subclass and exact GELU activations use oneDNN's kernel.
    Returns ``model``."""
    for layer in model.sublayers(include_self=True):
        if type(layer) in _CPU_CLASS:
            layer.__class__ = _CPU_CLASS[type(layer)]
        if getattr(layer, "act", None) is F.gelu:
            layer.act = kernels.gelu
    if not _accelerated:
        _change_settings()
    if id(model) not in _accelerated:
        finalizer = weakref.finalize(model, _forget, id(model))
        finalizer.atexit = False  # nothing to put back in an exiting process
        _accelerated[id(model)] = finalizer
    return model


def restore(model):
    """Undo ``accelerate(model)``: the stock layers again; after the last accelerated model, the
    process settings as they were before. Returns ``model``."""
    for layer in model.sublayers(include_self=True):
        if type(layer) in _STOCK_CLASS:
            layer.__class__ = _STOCK_CLASS[type(layer)]
        if getattr(layer, "act", None) is kernels.gelu:
            layer.act = F.gelu
    if id(model) in _accelerated:
        _accelerated[id(model)].detach()
        _forget(id(model))
    return model


def _forget(model_id):
    del _accelerated[model_id]
    if not _accelerated:
        _put_back_settings()


def _change_settings():
    global _saved
    _saved = {"FLAGS_use_stride_kernel": paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]}
    openmp = _openmp()
    if openmp is not None:
        _saved["blocktime"] = openmp.kmp_get_blocktime()
        openmp.kmp_set_blocktime(0)
    if not paddle.is_compiled_with_cuda():  # the flag is process-wide: a GPU's views stay
        paddle.set_flags({"FLAGS_use_stride_kernel": False})
    kernels.ONEDNN = onednn.load()


def _put_back_settings():
    global _saved
    kernels.ONEDNN = None
    paddle.set_flags({"FLAGS_use_stride_kernel": _saved["FLAGS_use_stride_kernel"]})
    openmp = _openmp()
    if openmp is not None and "blocktime" in _saved:
        openmp.kmp_set_blocktime(_saved["blocktime"])
    _saved = None


def _openmp():
    """Paddle's Intel OpenMP runtime, or None where it is missing or KMP_BLOCKTIME decides."""
    if "KMP_BLOCKTIME" in os.environ or not os.path.exists(OPENMP_LIBRARY):
        return None
    return ctypes.CDLL(OPENMP_LIBRARY)
