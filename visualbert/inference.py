"""Prediction through an exported model: a trained model exported once to a static program, with answers
equal to the training-time model's. ``--engine onnxruntime`` (the default on the CPU for ``ask``,
``serve``, ``pipeline`` and the ``run_predict.py`` scripts: the fastest measured, see BENCHMARKS.md)
runs the program converted to ONNX (``visualbert.onnx_engine``); ``--engine paddle_inference`` runs it
by Paddle's deployment predictor (oneDNN on the CPU); ``--engine dygraph`` runs the model as training
does (the default on a GPU and under ``paddle.distributed.launch``). The program is cached beside the weights in
``<model>/inference/`` (written atomically: a temp dir renamed into place) together with the
fingerprint of the weights and config it was made from; a changed model is exported again.

Never in a training process: a predictor switches oneDNN state that is global to the process, and
the dygraph model of the same process then runs slower. Training-time evaluation therefore stays
dygraph (``engine.predict`` over the model); only the prediction entry points build a predictor.

Each engine's model (:class:`ExportedModel`) stands where the dygraph model stood: it is called with the model's keyword
arguments (``engine.model_kwargs`` picks them from a batch) and returns an object with ``.logits``,
so ``engine.predict`` and the prediction steps in ``tasks`` run unchanged over it.
"""
import json
import os
import shutil
import tempfile
import threading

import numpy as np

__all__ = ["ENGINES", "EXPORTED_ENGINES", "INPUT_NAMES", "InferenceModel", "add_engine_arg", "default_engine", "export",
           "ExportedModel", "load_inference_model"]

ENGINES = ("dygraph", "paddle_inference", "onnxruntime")
# the engines that run an export of the model rather than the model itself: CPU only, one process
EXPORTED_ENGINES = ("paddle_inference", "onnxruntime")

# What the exported program takes, in this order: the collated batch's model inputs.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "visual_embeds", "visual_attention_mask",
               "visual_token_type_ids")
_TEXT_INPUTS = INPUT_NAMES[:3]  # the inputs shaped [B, text length]
_FINGERPRINT = "fingerprint.json"
_PROGRAM = "model"
_EXPORT_FORMAT = 2  # bump when what export() writes changes: older caches are then made again


def default_engine(device, processes=1, model_dir=True):
    """The engine a prediction command uses when none is named, the fastest one measured (BENCHMARKS.md,
    BERT-base on 2 CPU threads, one question and batches of 64): ONNX Runtime on the CPU, the dygraph model
    on a GPU and across ``processes`` > 1 (the exported engines run on the CPU, in one process), and for a
    model that is not a saved directory (``model_dir`` False: a config file, freshly initialised, has no
    directory to cache an export in)."""
    return "onnxruntime" if device == "cpu" and processes == 1 and model_dir else "dygraph"


def add_engine_arg(parser):
    """The ``--engine`` switch of the prediction commands (run_predict.py, ask, serve)."""
    parser.add_argument("--engine", default=None, choices=ENGINES,
                        help="how the model runs: onnxruntime (exported once to <model>/inference/, converted "
                             "to ONNX and run by ONNX Runtime; the default on the CPU, the fastest measured for "
                             "one question), paddle_inference (the same export run by Paddle's deployment "
                             "predictor with oneDNN; CPU; a few percent faster on large batches) or dygraph "
                             "(the model as trained; the default on a GPU and across processes); same answers")


def _fingerprint(model_dir):
    """What the exported program depends on: the config and every weight file (name, size, mtime)."""
    import paddle

    from .pretrained import _WEIGHT_FILES

    files = {}
    for name in sorted(os.listdir(model_dir)):
        if name in _WEIGHT_FILES or name.endswith((".pdparams", ".safetensors")) or name in ("config.json",
                                                                                            "model_config.json"):
            st = os.stat(os.path.join(model_dir, name))
            files[name] = [st.st_size, st.st_mtime_ns]
    return {"format": _EXPORT_FORMAT, "paddle": paddle.__version__, "files": files}


class _Logits:
    """What the dygraph heads return, as far as prediction reads it."""

    def __init__(self, logits):
        self.logits = logits


class _ProgramInputs:
    """The exported program's signature: the model inputs by name, logits out."""

    @staticmethod
    def layer(model):
        import paddle

        class Program(paddle.nn.Layer):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids, visual_embeds, visual_attention_mask,
                        visual_token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                  visual_embeds=visual_embeds, visual_attention_mask=visual_attention_mask,
                                  visual_token_type_ids=visual_token_type_ids).logits

        return Program(model)

    @staticmethod
    def specs(visual_dim):
        from paddle.static import InputSpec

        text = [InputSpec([None, None], "int64", name) for name in INPUT_NAMES[:3]]
        return text + [InputSpec([None, None, visual_dim], "float32", "visual_embeds"),
                       InputSpec([None, None], "int64", "visual_attention_mask"),
                       InputSpec([None, None], "int64", "visual_token_type_ids")]


def _cache_dir(model_dir):
    """``<model>/inference`` when the model's directory is writable, else a per-user cache keyed by its path."""
    if os.access(model_dir, os.W_OK):
        return os.path.join(model_dir, "inference")
    import hashlib

    key = hashlib.sha256(os.path.abspath(model_dir).encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "visualbert", "inference", key)


_export_lock = threading.Lock()


def export(model_dir, head, model=None, onnx=False):
    """The directory of ``model_dir``'s inference program (``head``: the model class), exported now unless a
    cache made from the same weights and config is there. ``model``: the loaded dygraph model, if the
    caller has one on Paddle's stock layers (else it is loaded here and released after). ``onnx``: the
    directory must also hold the program converted to ONNX (``visualbert.onnx_engine``); a current
    program without it is copied, not exported again, and the conversion added."""
    from .checkpoint import _write_dir_atomically

    model_dir = os.fspath(model_dir)
    target = _cache_dir(model_dir)
    wanted = _fingerprint(model_dir)
    if onnx:
        from . import onnx_engine

        wanted_onnx = onnx_engine.converter_versions()  # checks that the converters import, before any export
    with _export_lock:
        program_current, onnx_current = _current(_read_fingerprint(target), wanted, wanted_onnx if onnx else None)
        if program_current and (not onnx or onnx_current):
            return target
        if model is None and not program_current:
            model = _stock_model(head, model_dir)
        os.makedirs(os.path.dirname(target), exist_ok=True)

        def write(tmp):
            made = dict(wanted)
            if program_current:
                for name in os.listdir(target):
                    if name.startswith(_PROGRAM + ".") and not name.endswith(".onnx"):
                        shutil.copy2(os.path.join(target, name), tmp)
            else:
                _save_program(model, os.path.join(tmp, _PROGRAM))
            if onnx:
                onnx_engine.convert(os.path.join(tmp, _PROGRAM))
                made["onnx"] = wanted_onnx
            with open(os.path.join(tmp, _FINGERPRINT), "w") as f:
                json.dump(made, f)

        tmp = tempfile.mkdtemp(prefix=".tmp-inference-", dir=os.path.dirname(target))
        try:
            _write_dir_atomically(target, tmp, write)
        except OSError:
            # another process exporting the same model renamed its program into place first: take that one
            shutil.rmtree(tmp, ignore_errors=True)
            program_current, onnx_current = _current(_read_fingerprint(target), wanted, wanted_onnx if onnx else None)
            if not program_current or (onnx and not onnx_current):
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed export or conversion leaves nothing half-written
            raise
    return target


def _current(cached, wanted, wanted_onnx):
    """(whether a cache's fingerprint ``cached`` says its program was made from the model as it is now,
    whether its ONNX conversion was made by the converters installed now)."""
    if cached is None:
        return False, False
    program = {k: v for k, v in cached.items() if k != "onnx"} == wanted
    return program, program and wanted_onnx is not None and cached.get("onnx") == wanted_onnx


def _model_config(model_dir):
    from .pretrained import _checkpoint_config

    return _checkpoint_config(model_dir, model_dir)


def _read_fingerprint(target):
    try:
        with open(os.path.join(target, _FINGERPRINT)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _stock_model(head, model_dir):
    from .pretrained import load_model

    return load_model(head, model_dir, new_head=False, cpu_kernels=False)


def _save_program(model, prefix):
    import paddle

    from . import cpu, quiet

    cpu.restore(model)  # the program is made of Paddle's own operators; visualbert.cpu's ctypes kernels are not
    model.eval()
    program = _ProgramInputs.layer(model)
    program.eval()
    # saving any program makes Paddle's C++ warn about "input out tensor"s, which this program has none of
    with quiet.native_stderr_without(("Paddle static graph(PIR) not support input out tensor",)):
        paddle.jit.save(paddle.jit.to_static(program, full_graph=True), prefix,
                        input_spec=_ProgramInputs.specs(model.config.visual_embedding_dim))


class ExportedModel:
    """An engine over the exported model, called like the dygraph model in prediction: the model's
    keyword arguments in, an object with ``.logits`` out. Calls are serialised (an engine runs one
    batch at a time on all its threads). Each engine's class defines ``_run(arrays)``: the logits (numpy)
    of one batch of input arrays by name."""

    training = False
    # A larger batch runs in chunks of this many rows: their activations stay in the CPU's caches, and each
    # chunk is padded only to its own longest text (BENCHMARKS.md: BERT-base at batch 64 on 2 threads)
    rows_per_run = 16

    def __init__(self, program_dir, config):
        self.config = config
        self.program_dir = program_dir
        self._lock = threading.Lock()

    def forward(self, input_ids, attention_mask, token_type_ids, visual_embeds, visual_attention_mask,
                visual_token_type_ids, labels=None):
        """``.logits`` (a paddle Tensor, float32) of one padded batch; ``labels`` is accepted and ignored."""
        import paddle

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "visual_embeds": visual_embeds, "visual_attention_mask": visual_attention_mask,
                 "visual_token_type_ids": visual_token_type_ids}
        arrays = {}
        for name, value in given.items():  # as the program takes them: float32 features, int64 ids and masks
            value = value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)
            arrays[name] = np.ascontiguousarray(value, dtype=np.float32 if name == "visual_embeds" else np.int64)
        with self._lock:
            logits = self._run_in_chunks(arrays)
        return _Logits(paddle.to_tensor(logits))

    def _run_in_chunks(self, arrays):
        """The logits of a batch run ``rows_per_run`` rows at a time, the rows taken in order of their text
        length and each chunk cut to its own longest text. Exact: the columns cut are padding in every row
        of the chunk, which no token attends to and no head reads."""
        batch = len(arrays["input_ids"])
        if batch <= self.rows_per_run:
            return self._run(arrays)
        text_mask = arrays["attention_mask"]
        order = np.argsort(-text_mask.sum(axis=1), kind="stable")
        chunks = []
        for start in range(0, batch, self.rows_per_run):
            rows = order[start:start + self.rows_per_run]
            used = np.flatnonzero(text_mask[rows].any(axis=0))
            text_len = int(used[-1]) + 1 if len(used) else text_mask.shape[1]
            chunks.append(self._run({name: value[rows][:, :text_len] if name in _TEXT_INPUTS else value[rows]
                                     for name, value in arrays.items()}))
        logits = np.empty((batch,) + chunks[0].shape[1:], chunks[0].dtype)
        logits[order] = np.concatenate(chunks)
        return logits

    __call__ = forward

    def eval(self):
        return self

    def train(self):
        raise RuntimeError(f"an {type(self).__name__} only predicts; train the dygraph model")


class InferenceModel(ExportedModel):
    """A Paddle Inference predictor over an exported program.

    ``threads``: the CPU threads of its math library (default: OMP_NUM_THREADS, else every core).
    """

    def __init__(self, program_dir, config, threads=None):
        from paddle import inference

        super().__init__(program_dir, config)
        prefix = os.path.join(program_dir, _PROGRAM)
        graph = prefix + ".json" if os.path.isfile(prefix + ".json") else prefix + ".pdmodel"
        settings = inference.Config(graph, prefix + ".pdiparams")
        settings.disable_gpu()
        settings.enable_mkldnn()
        settings.set_cpu_math_library_num_threads(int(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
        settings.disable_glog_info()
        self.predictor = inference.create_predictor(settings)

    def _run(self, arrays):
        for name in self.predictor.get_input_names():
            handle = self.predictor.get_input_handle(name)
            handle.reshape(arrays[name].shape)
            handle.copy_from_cpu(arrays[name])
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()


def load_inference_model(head, model_dir, model=None, threads=None, engine="paddle_inference"):
    """The exported model of the model directory ``model_dir``, run by ``engine`` (``paddle_inference``: an
    InferenceModel; ``onnxruntime``: a ``visualbert.onnx_engine.OnnxModel``), exported first when no current
    cache is there. ``model``: its dygraph model when the caller loaded it already (its config is the engine's)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise SystemExit(f"error: --engine {engine} needs a model directory, not {model_dir} "
                         "(convert or train one, or pass --engine dygraph)")
    config = model.config if model is not None else _model_config(model_dir)
    if engine == "onnxruntime":
        from .onnx_engine import OnnxModel

        return OnnxModel(export(model_dir, head, model=model, onnx=True), config, threads=threads)
    return InferenceModel(export(model_dir, head, model=model), config, threads=threads)
