"""Prediction through Paddle Inference: a trained model exported once to a static program and run by
Paddle's deployment predictor (oneDNN on the CPU), with answers equal to the training-time model's.

``--engine paddle_inference`` (the default on the CPU for one question at a time: ``ask``, ``serve``,
``pipeline``) uses it; ``--engine dygraph`` runs the model as training does (on the CPU with
``visualbert.cpu``'s kernels: the default for whole splits, ``run_predict.py``, where it measured
faster; see BENCHMARKS.md). The program is cached beside the weights in
``<model>/inference/`` (written atomically: a temp dir renamed into place) together with the
fingerprint of the weights and config it was made from; a changed model is exported again.

Never in a training process: a predictor switches oneDNN state that is global to the process, and
the dygraph model of the same process then runs slower. Training-time evaluation therefore stays
dygraph (``engine.predict`` over the model); only the prediction entry points build a predictor.

:class:`InferenceModel` stands where the dygraph model stood: it is called with the model's keyword
arguments (``engine.model_kwargs`` picks them from a batch) and returns an object with ``.logits``,
so ``engine.predict`` and the prediction steps in ``tasks`` run unchanged over it.
"""
import json
import os
import shutil
import tempfile
import threading

import numpy as np

__all__ = ["ENGINES", "INPUT_NAMES", "InferenceModel", "add_engine_arg", "default_engine", "export",
           "load_inference_model"]

ENGINES = ("dygraph", "paddle_inference")

# What the exported program takes, in this order: the collated batch's model inputs.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "visual_embeds", "visual_attention_mask",
               "visual_token_type_ids")
_FINGERPRINT = "fingerprint.json"
_PROGRAM = "model"
_EXPORT_FORMAT = 1  # bump when what export() writes changes: older caches are then made again


def default_engine(device, whole_split=False):
    """The engine a prediction command uses when none is named, the faster one as measured (BENCHMARKS.md,
    BERT-base on 2 CPU threads): Paddle Inference for questions one at a time on the CPU (ask, serve,
    pipeline), the dygraph model on visualbert.cpu's kernels for batches of a whole split
    (``whole_split``: run_predict.py) and everywhere on a GPU."""
    return "paddle_inference" if device == "cpu" and not whole_split else "dygraph"


def add_engine_arg(parser):
    """The ``--engine`` switch of the prediction commands (run_predict.py, ask, serve)."""
    parser.add_argument("--engine", default=None, choices=ENGINES,
                        help="how the model runs: paddle_inference (exported once to <model>/inference/ and run "
                             "by Paddle's deployment predictor with oneDNN; the default for ask and serve on the "
                             "CPU, faster for one question) or dygraph (the model as trained; the default for "
                             "run_predict.py, faster for batches, and on a GPU); same answers")


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


def export(model_dir, head, model=None):
    """The directory of ``model_dir``'s inference program (``head``: the model class), exported now unless a
    cache made from the same weights and config is there. ``model``: the loaded dygraph model, if the
    caller has one on Paddle's stock layers (else it is loaded here and released after)."""
    from .checkpoint import _write_dir_atomically

    model_dir = os.fspath(model_dir)
    target = _cache_dir(model_dir)
    wanted = _fingerprint(model_dir)
    with _export_lock:
        if _read_fingerprint(target) == wanted:
            return target
        if model is None:
            model = _stock_model(head, model_dir)
        os.makedirs(os.path.dirname(target), exist_ok=True)

        def write(tmp):
            _save_program(model, os.path.join(tmp, _PROGRAM))
            with open(os.path.join(tmp, _FINGERPRINT), "w") as f:
                json.dump(wanted, f)

        tmp = tempfile.mkdtemp(prefix=".tmp-inference-", dir=os.path.dirname(target))
        try:
            _write_dir_atomically(target, tmp, write)
        except OSError:
            # another process exporting the same model renamed its program into place first: take that one
            shutil.rmtree(tmp, ignore_errors=True)
            if _read_fingerprint(target) != wanted:
                raise
    return target


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


class InferenceModel:
    """A Paddle Inference predictor over an exported program, called like the dygraph model in prediction.

    ``threads``: the CPU threads of its math library (default: OMP_NUM_THREADS, else every core).
    Calls are serialised (a predictor runs one batch at a time).
    """

    training = False

    def __init__(self, program_dir, config, threads=None):
        from paddle import inference

        prefix = os.path.join(program_dir, _PROGRAM)
        graph = prefix + ".json" if os.path.isfile(prefix + ".json") else prefix + ".pdmodel"
        settings = inference.Config(graph, prefix + ".pdiparams")
        settings.disable_gpu()
        settings.enable_mkldnn()
        settings.set_cpu_math_library_num_threads(int(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
        settings.disable_glog_info()
        self.predictor = inference.create_predictor(settings)
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
        with self._lock:
            for name in self.predictor.get_input_names():
                value = given[name]
                value = value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)
                value = np.ascontiguousarray(value, dtype=np.float32 if name == "visual_embeds" else np.int64)
                handle = self.predictor.get_input_handle(name)
                handle.reshape(value.shape)
                handle.copy_from_cpu(value)
            self.predictor.run()
            logits = self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()
        return _Logits(paddle.to_tensor(logits))

    __call__ = forward

    def eval(self):
        return self

    def train(self):
        raise RuntimeError("an InferenceModel only predicts; train the dygraph model")


def load_inference_model(head, model_dir, model=None, threads=None):
    """The InferenceModel of the model directory ``model_dir`` (exported first when no current cache is there).
    ``model``: its dygraph model when the caller loaded it already (its config is the predictor's)."""
    from .pretrained import _checkpoint_config

    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise SystemExit(f"error: --engine paddle_inference needs a model directory, not {model_dir} "
                         "(convert or train one, or pass --engine dygraph)")
    config = model.config if model is not None else _checkpoint_config(model_dir, model_dir)
    program_dir = export(model_dir, head, model=model)
    return InferenceModel(program_dir, config, threads=threads)
