"""VisualBERT on PaddlePaddle / PaddleNLP: models, checkpoint conversion, data, training and metrics."""
import os

__version__ = "0.1.0"

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
VOCAB_FILE = os.path.join(DATA_DIR, "bert-base-uncased-vocab.txt")
VQA_ANSWERS_FILE = os.path.join(DATA_DIR, "answers_vqa.txt")
