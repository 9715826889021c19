"""Loading pickled files that users download, without letting them run code.

imdb ``.npy`` annotation files, PyTorch checkpoints and Paddle's own ``.pdparams`` / ``.pdopt``
files (``paddle.save`` is plain pickle) are pickles. A plain ``pickle.load`` (or ``paddle.load``,
``np.load(allow_pickle=True)``) imports and calls whatever the file names, so a malicious file runs
code. The unpickler here resolves only an allow-list of names: numpy array reconstruction and plain
containers. Callers that read PyTorch files add their own few rebuild functions via ``extra``.
"""
import collections
import os
import pickle

import numpy as np


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The file asked for a global outside the allow-list.

    Also a ValueError: a refused file is bad input like any other, so whatever reports bad input in
    one line (a script's setup, the training loop, the data loader) reports this too."""


def _base_globals():
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float64(1.0).__reduce__()[0]
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        # Python-2-era pickles store bytes as latin-1 text passed through codecs.encode.
        ("_codecs", "encode"): _latin1_encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    return allowed


def _latin1_encode(text, encoding="latin1", errors="strict"):
    if not isinstance(text, str):
        raise UnsafePickleError("codecs.encode was given a non-string")
    return text.encode(encoding, errors)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals.

    ``extra`` maps ``(module, name)`` to the object to hand back for it: PyTorch readers use it
    to substitute their own tensor rebuild functions.
    """

    def __init__(self, file, source="<pickle>", extra=None, **kwargs):
        super().__init__(file, **kwargs)
        self.source = source
        self.allowed = _base_globals()
        if extra:
            self.allowed.update(extra)

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load '{module}.{name}' — only numpy arrays and plain "
                "containers are allowed in this file (it may be corrupt or malicious)"
            ) from None


def load_pickle(f, source, what, extra=None):
    """The next pickle of the open binary file ``f``, through :class:`RestrictedUnpickler`.

    A refused name raises :class:`UnsafePickleError`; any other failure (a truncated or corrupt
    stream fails in many ways) one ValueError naming ``source`` and ``what`` the file should hold.
    Python-2-era pickles decode their byte strings as latin-1, as numpy and Paddle do.
    """
    try:
        return RestrictedUnpickler(f, source=source, extra=extra, encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise ValueError(f"{source}: truncated or corrupt {what} ({type(e).__name__}: {e})") from None


# paddle.save writes a top-level state dict's tensors as numpy arrays, a nested tensor (AMP's
# master_weights) as the tuple (name, array), and the RNG state as Paddle's GeneratorState, whose
# pickled state is a plain tuple of integers. Those are the only names its files may ask for.
_PADDLE_NAME_TABLE = "StructuredToParameterName@@"


def _paddle_globals(with_rng):
    allowed = {("builtins", "tuple"): tuple}
    if with_rng:
        from paddle.base.libpaddle import GeneratorState

        allowed[("paddle.base.libpaddle", "GeneratorState")] = GeneratorState
    return allowed


def load_paddle(path, rng_state=False):
    """``paddle.load`` for ``.pdparams`` / ``.pdopt`` files, without trusting the pickle.

    Tensors come back as numpy arrays (``set_state_dict`` takes them as they are); ``rng_state``
    admits Paddle's generator states, which only a checkpoint's ``rng_state*.pdparams`` hold.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        obj = load_pickle(f, source=path, what="Paddle file", extra=_paddle_globals(rng_state))
    if isinstance(obj, dict):
        obj.pop(_PADDLE_NAME_TABLE, None)
    return _unwrap_named_arrays(obj)


# Weight indexes of sharded checkpoints: PaddleNLP loads the shards they name itself (with plain pickle
# for .pdparams shards, whatever the index's suffix says), so no state dict handed to it can stand in.
_SHARD_INDEXES = (".pdparams.index.json", ".safetensors.index.json", ".bin.index.json")


def load_pretrained_weights(directory, use_safetensors=True):
    """The weights ``from_pretrained`` would read from a local model directory, read here, safely.

    Returns the state dict of ``model.safetensors`` (unless ``use_safetensors`` is False; read without
    any pickle) or else of ``model_state.pdparams`` (through the restricted unpickler), to hand to
    ``from_pretrained(state_dict=)`` so that PaddleNLP reads no weight file itself; None when
    ``directory`` is not a local directory. A sharded checkpoint is refused with one line, since
    PaddleNLP would read its shards itself; so is a directory with neither file (PaddleNLP would go
    looking for variants of them).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return None
    names = set(os.listdir(directory))
    indexes = sorted(n for n in names if n.endswith(_SHARD_INDEXES))
    if indexes:
        raise ValueError(f"{os.path.join(directory, indexes[0])}: sharded checkpoints are not read (their shards would "
                         "be loaded unchecked); save the model as one model_state.pdparams or model.safetensors")
    if use_safetensors and "model.safetensors" in names:
        return load_safetensors(os.path.join(directory, "model.safetensors"))
    if "model_state.pdparams" in names:
        return load_paddle(os.path.join(directory, "model_state.pdparams"))
    raise FileNotFoundError(f"{directory}: no model_state.pdparams"
                            + (" or model.safetensors" if use_safetensors else "") + " to load")


def load_safetensors(path):
    """A ``.safetensors`` file -> {name: numpy array}; the format holds no pickle, only a JSON header and bytes."""
    from safetensors.numpy import load_file

    path = os.fspath(path)
    try:
        return load_file(path)
    except Exception as e:  # the safetensors error types differ across versions
        raise ValueError(f"{path}: unreadable safetensors file ({e})") from None


def _unwrap_named_arrays(obj):
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return obj[1]
    if isinstance(obj, dict):
        return {k: _unwrap_named_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unwrap_named_arrays(v) for v in obj]
    return obj


def load_npy(path):
    """``np.load`` for files that may hold a pickled object array, without trusting the pickle."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        _shape, dtype = npy_header(f, path)
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"{path}: unreadable .npy data ({e})") from None
        array = load_pickle(f, source=path, what="pickled .npy")
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: expected a pickled numpy array, found {type(array).__name__}")
    return array


def npy_header(f, path):
    """(shape, dtype) from the header of the ``.npy`` file open as ``f``, which is left at its first data byte."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(f)
    except (ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a .npy file ({e})") from None
    return shape, dtype
