"""``--engine onnxruntime``, the default engine on the CPU: the program ``visualbert.inference`` exports,
converted to ONNX (paddle2onnx, opset 17) and run by ONNX Runtime on the CPU, whose own graph
optimizations (``ORT_ENABLE_ALL``: each GELU with its bias, layer norms with their residual adds,
Q.K^T with its transpose) apply as the session loads. BENCHMARKS.md measured it the fastest of the
engines on BERT-base for one question (1.3x Paddle Inference), within a few percent of Paddle Inference
at batch 64, with logits within 3.0e-6 of the dygraph model's; running ONNX Runtime's BERT optimizer
over the file first made it no faster.

The ONNX file sits in the same cache directory as the Paddle Inference program (``<model>/inference/
model.onnx``), made under the same fingerprint plus the converter's version, so that a changed model
or an upgraded converter makes it again; ``inference.export`` writes it, through :func:`convert`.
"""
import os

from .inference import ExportedModel

__all__ = ["OnnxModel", "convert", "converter_versions"]

ONNX_FILE = "model.onnx"
_OPSET = 17


def _modules():
    """(onnxruntime, paddle2onnx), or one line saying which is missing and how to get it."""
    try:
        import onnxruntime
        import paddle2onnx
    except ImportError as e:
        raise SystemExit(f"error: --engine onnxruntime needs the {e.name} package ({e}); install it with "
                         "`pip install -r requirements.txt`, or pass --engine paddle_inference or dygraph") from None
    return onnxruntime, paddle2onnx


def converter_versions():
    """What the ONNX file depends on beside the model: the converter's version and the opset."""
    _, paddle2onnx = _modules()
    return {"paddle2onnx": paddle2onnx.__version__, "opset": _OPSET}


def convert(program_prefix):
    """Write ``model.onnx`` beside the Paddle program at ``program_prefix`` (in the directory being written)."""
    from . import quiet

    _, paddle2onnx = _modules()
    graph = program_prefix + ".json" if os.path.isfile(program_prefix + ".json") else program_prefix + ".pdmodel"
    # it reports every step on stdout, where ask prints its answers: kept for a failure only
    with quiet.output_kept_for_errors():
        paddle2onnx.export(graph, program_prefix + ".pdiparams", os.path.join(os.path.dirname(program_prefix), ONNX_FILE),
                           opset_version=_OPSET, enable_onnx_checker=True)


class OnnxModel(ExportedModel):
    """An ONNX Runtime session over the exported model (``model.onnx`` in ``program_dir``).

    ``threads``: its intra-op threads (default: OMP_NUM_THREADS, else every core).
    """

    def __init__(self, program_dir, config, threads=None):
        super().__init__(program_dir, config)
        onnxruntime, _ = _modules()
        settings = onnxruntime.SessionOptions()
        settings.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        settings.intra_op_num_threads = int(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
        settings.inter_op_num_threads = 1
        settings.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        settings.log_severity_level = 3  # errors only: its optimizer warns about the shapes it leaves dynamic
        self.session = onnxruntime.InferenceSession(os.path.join(program_dir, ONNX_FILE), settings,
                                                    providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _run(self, arrays):
        return self.session.run(None, {name: arrays[name] for name in self.input_names})[0]
