"""VisualBERT on PaddlePaddle / PaddleNLP: models, checkpoint conversion, data, training and metrics."""
import os

__version__ = "0.1.0"

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
VOCAB_FILE = os.path.join(DATA_DIR, "bert-base-uncased-vocab.txt")
VQA_ANSWERS_FILE = os.path.join(DATA_DIR, "answers_vqa.txt")

# the settings of a run, for training and predicting from Python (see visualbert.training_args)
from .training_args import PredictionArguments, TaskArguments, TrainingArguments  # noqa: E402


def pipeline(task, model, device="cpu", weights=None, engine=None):
    """A trained model as a callable, in transformers' pipeline shape (see :mod:`visualbert.pipelines`)::

        vqa = pipeline("visual-question-answering", "runs/mine/best")
        vqa(image="photo.jpg", question="what is the man holding?", top_k=5)

    ``engine``: ``"onnxruntime"`` (the default on the CPU), ``"paddle_inference"`` or ``"dygraph"``; see
    :mod:`visualbert.inference`.
    """
    from .pipelines import pipeline as make

    return make(task, model, device=device, weights=weights, engine=engine)
