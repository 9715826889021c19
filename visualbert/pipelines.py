"""Use a trained model on new images: ``visualbert.pipeline("visual-question-answering", "runs/mine/best")``.

The shape is the ecosystem's (transformers' VQA pipeline)::

    from visualbert import pipeline
    vqa = pipeline("visual-question-answering", "runs/mine/best")
    vqa(image="photo.jpg", question="what is the man holding?", top_k=5)
    # -> [{"answer": "umbrella", "score": 0.83}, ...]

An image is a path, a PIL image, a numpy array (H x W x 3 uint8, or H x W grey) or raw file bytes.
A list of questions about one image, or a list of ``{"image", "question"}`` dicts, is answered in
one batch, each distinct image's features made once. ``"visual-reasoning"`` (NLVR2) takes
``image``, ``image2`` and a ``statement`` and returns ``{"answer": True/False, "score": p}``.

Features are made exactly as for the model's training: the model records how its store was made
(:mod:`visualbert.provenance`) and the same extractor code (:func:`visualbert.extract.image_features`)
runs with the same backbone, weights, image size, grid and on-disk dtype rounding. Features that
cannot be made again from a raw image (Detectron, imported releases, boxes from a file) raise
:class:`FeaturesUnavailable` in one line; give ``features=`` rows (e.g. ``read_store_features``)
or ``boxes=`` then. Inputs are built by the training datasets themselves (``VQADataset`` /
``NLVR2Dataset``), and answers are scored as ``run_predict.py`` does (``<unk>`` never chosen), so
an answer here is the answer prediction gives for the same image and question.

Calls are serialised by a lock: one pipeline object may be shared by the threads of a server.
On the CPU the model runs through ONNX Runtime (``engine="onnxruntime"``, the default, see
:mod:`visualbert.onnx_engine`) or Paddle Inference (``engine="paddle_inference"``, :mod:`visualbert.inference`);
the attention of ``explain`` comes from the dygraph model.
"""
import io
import os
import threading

import numpy as np

from . import provenance
from .formats.common import read_json
from .training_args import TaskArguments

__all__ = ["pipeline", "VisualQuestionAnswering", "VisualReasoning", "FeaturesUnavailable", "ImageFeaturizer",
           "load_image", "read_store_features", "TASKS"]


class FeaturesUnavailable(ValueError):
    """The model's features cannot be made from a raw image here; the message says what to give instead."""


def load_image(image):
    """A PIL RGB image from a path, PIL image, numpy array or encoded bytes; one clear error otherwise."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        raise ValueError(f"image array has shape {image.shape}; expected H x W x 3 (RGB) or H x W (grey)")
    try:
        if isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as im:
                return im.convert("RGB")
        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as im:
                return im.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(image)}: image not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        where = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "the image"
        raise ValueError(f"{where}: not a readable image ({type(e).__name__}: {e})") from None
    raise TypeError(f"image must be a path, PIL image, numpy array or bytes, got {type(image).__name__}")


class ImageFeaturizer:
    """Region features of raw images, made as the store described by ``record`` (a provenance) made them.

    ``weights``: the ``.pdparams`` file when the record's is not where it was (its sha256 is checked).
    """

    def __init__(self, record, weights=None):
        from .extract import Backbone

        if not record or record.get("extractor") != provenance.EXTRACTOR:
            why = (record or {}).get("why") or "the model does not record how its features were made"
            raise FeaturesUnavailable(f"cannot make this model's features from a raw image: {why}; pass features from "
                                      "its store (--features STORE --key KEY)")
        self.record = record
        self.needs_boxes = record.get("boxes") == "given"
        self.image_size = int(record["image_size"])
        self.grid = record.get("grid")
        self.dtype = np.dtype(record.get("dtype") or "float32")
        self.net = Backbone(record["backbone"], self._weights(record, weights), record.get("patch_size") or 8)

    @staticmethod
    def _weights(record, override):
        wanted = record.get("weights")
        if wanted in ("imagenet", "none"):
            return wanted
        path = override or record.get("weights_file")
        if not path or not os.path.isfile(path):
            raise FeaturesUnavailable(f"the model's features were made with the backbone weights {path or wanted}, "
                                      "which are not there; pass that .pdparams file as --weights")
        if wanted.startswith("sha256:") and provenance.file_sha256(path) != wanted[len("sha256:"):]:
            raise FeaturesUnavailable(f"{path}: not the backbone weights the model's features were made with "
                                      f"(sha256 differs from {wanted})")
        return path

    def __call__(self, images, boxes=None):
        """[(float32 [n, D], geometry [n, 6])] for PIL ``images``; ``boxes``: per image [[x1, y1, x2, y2], ...] pixels."""
        from .extract import image_features, resize_image
        from .geometry import check_pixel_boxes

        if self.needs_boxes and boxes is None:
            raise FeaturesUnavailable(f"cannot make this model's features from a raw image alone: "
                                      f"{self.record.get('why')}")
        resized = [resize_image(im, self.image_size) for im in images]
        pixels = np.stack([p for p, _ in resized])
        sizes = [s for _, s in resized]
        checked = None
        if boxes is not None:
            checked = [check_pixel_boxes(b, what="boxes") for b in boxes]
        feats, geometry = image_features(self.net, pixels, sizes, grid=None if checked else self.grid, boxes=checked)
        # the model trained on the store's rows: rounded to its on-disk dtype, read back as float32
        return [(f.astype(self.dtype).astype(np.float32), g) for f, g in zip(feats, geometry)]


def read_store_features(store_dir, key):
    """(float32 [n, D], geometry [n, 6] or None) of ``key`` in a packed store, for models whose features
    cannot be made from a raw image."""
    from .features import open_feature_dir

    store = open_feature_dir(store_dir)
    if key not in store:
        raise KeyError(f"{store_dir}: no features for key '{key}'")
    rows = store.get(key)
    try:
        geometry = store.store.extra("boxes", store._key(key))
    except KeyError:
        geometry = None
    return rows, geometry


class _Rows:
    """The feature-store interface the training datasets read, over rows (and box geometry) made in memory."""

    def __init__(self, rows, geometry=None):
        self.rows = rows
        self.geometry = geometry or {}
        self.has_boxes = all(self.geometry.get(k) is not None for k in rows)

    def get(self, key, dtype=np.float32):
        return self.rows[key] if dtype is None else self.rows[key].astype(dtype, copy=False)

    def boxes(self, key):
        return self.geometry[key]

    def where(self):
        return "the given features"


def _run_settings(model_dir):
    """The tokenizer and text length the model trained with (its run's run_config.json), else the defaults."""
    run_config = os.path.join(os.path.dirname(os.path.normpath(model_dir)), "run_config.json")
    saved = {}
    if os.path.isfile(run_config):
        saved = read_json(run_config, "the training run's settings, a JSON object")
        if not isinstance(saved, dict):
            raise ValueError(f"{run_config}: expected the training run's settings, a JSON object, "
                             f"found {type(saved).__name__}")
    return TaskArguments(**{name: saved[name] for name in ("bert_model_name", "max_seq_length") if name in saved})


def _quietly(fn, *args, **kwargs):
    """``fn`` without PaddleNLP's INFO lines about the files it loads (the level is restored after)."""
    from paddlenlp.utils.log import logger

    level = logger.logger.level
    logger.set_level("WARNING")
    try:
        return fn(*args, **kwargs)
    finally:
        logger.logger.setLevel(level)


class _Pipeline:
    head = None

    def __init__(self, model, device="cpu", weights=None, engine=None):
        import paddle

        from . import inference, pretrained

        paddle.set_device(device)
        self.engine = engine or inference.default_engine(device)
        if self.engine not in inference.ENGINES:
            raise ValueError(f"unknown engine '{self.engine}' (expected one of: {', '.join(inference.ENGINES)})")
        if self.engine in inference.EXPORTED_ENGINES and device != "cpu":
            raise ValueError(f"the {self.engine} engine runs on the CPU; on a GPU use engine='dygraph'")
        if not os.path.exists(os.fspath(model)):
            raise SystemExit(f"error: model {os.fspath(model)}: no such directory (expected a trained model: "
                             "RUN/best, RUN/model, a checkpoint, or RUN)")
        self.model_dir = pretrained.resolve_model_path(os.fspath(model))
        self.model = _quietly(pretrained.load_model, self.head, self.model_dir, new_head=False,
                              cpu_kernels=self.engine == "dygraph")
        self.model.eval()
        # the dygraph model: what draws the attention pictures (the predictor returns logits only)
        self.dygraph = self.model
        if self.engine in inference.EXPORTED_ENGINES:
            self.model = inference.load_inference_model(self.head, self.model_dir, model=self.dygraph,
                                                        engine=self.engine)
        # a model trained with add_spatial_features takes each region's box geometry after its features
        self.spatial = bool(getattr(self.dygraph.config, "add_spatial_features", False))
        settings = _run_settings(self.model_dir)
        self.tokenizer = pretrained.tokenizer_from_args(settings)
        self.max_seq_length = settings.max_seq_length
        self.provenance = provenance.of_model(self.model_dir)
        self._weights = weights
        self._featurizer = None
        self.lock = threading.Lock()

    @property
    def featurizer(self):
        if self._featurizer is None:
            self._featurizer = ImageFeaturizer(self.provenance, self._weights)
        return self._featurizer

    def check_reproducible(self):
        """Raise FeaturesUnavailable now (before any image arrives) when raw images cannot be used."""
        return self.featurizer

    def _features_of(self, sources, boxes):
        return _features_of(self, sources, boxes)

    def _forward(self, dataset, output_attentions=False):
        import paddle

        from . import engine

        batch = dataset.collate_fn()([dataset[i] for i in range(len(dataset))])
        tensors = {k: paddle.to_tensor(v) for k, v in batch.items() if isinstance(v, np.ndarray)}
        with self.lock, paddle.no_grad():
            logits = self.model(**engine.model_kwargs(self.model, tensors, {"labels": None})).logits
            attention = None
            if output_attentions:
                # answers come from the engine either way; the attention alone from the dygraph model
                out = self.dygraph(**engine.model_kwargs(self.dygraph, tensors, {"labels": None}),
                                   output_attentions=True)
                special = self.tokenizer.convert_tokens_to_ids(["[SEP]", "[MASK]", "[PAD]"])
                attention = _attention_to_regions(out.attentions[-1].numpy(), batch, special)
        return logits.astype("float32").numpy(), attention


def _attention_to_regions(last_layer, batch, special_ids):
    """[weights over each example's regions, summing to 1]: the last layer's attention from [CLS] and the
    text's tokens (not [SEP] / [MASK]) to each region, averaged over heads and those tokens."""
    text_len = batch["input_ids"].shape[1]
    result = []
    for b in range(last_layer.shape[0]):
        n_text = int(batch["attention_mask"][b].sum())
        n_regions = int(batch["visual_attention_mask"][b].sum())
        rows = [i for i in range(n_text) if int(batch["input_ids"][b, i]) not in special_ids]
        weights = last_layer[b][:, rows, text_len:text_len + n_regions].mean(axis=(0, 1))
        result.append(weights / max(float(weights.sum()), 1e-12))
    return result


class VisualQuestionAnswering(_Pipeline):
    """VQA: ``(image, question, top_k)`` -> ``[{"answer", "score"}]`` (softmax probabilities)."""

    task = "visual-question-answering"

    def __init__(self, model, device="cpu", weights=None, engine=None):
        from .modeling import VisualBertForQuestionAnswering
        from .tasks import prediction_answer_vocab

        self.head = VisualBertForQuestionAnswering
        super().__init__(model, device, weights, engine)
        self.answer_vocab = prediction_answer_vocab(TaskArguments(model_name_or_path=self.model_dir))
        if self.model.config.num_labels != len(self.answer_vocab):
            raise ValueError(f"{self.model_dir} predicts {self.model.config.num_labels} answers, but its answer "
                             f"vocabulary has {len(self.answer_vocab)}")

    def __call__(self, image=None, question=None, top_k=5, features=None, boxes=None):
        """Answers of one (image, question), or a list of answers for list inputs (see the module doc)."""
        pairs, single = _pairs(image, question, features)
        if single is None:
            raise ValueError("pass image= (or features=) and question=")
        results = self.answer(pairs, top_k=top_k, boxes=boxes)
        return results[0]["answers"] if single else [r["answers"] for r in results]

    def answer(self, pairs, top_k=5, boxes=None, explain=False):
        """[{"answers", "geometry", "image"}] for [(image or (rows, geometry), question)] (``image``: the PIL
        image the features were made from, None for given rows); with ``explain`` also each region's share
        of the attention (``"attention"``)."""
        from .inputs import VQADataset

        top_k = int(top_k)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        made = self._features_of([p[0] for p in pairs], boxes)
        examples = [{"question_str": _question(q), "question_id": i, "image_id": 0, "image_key": str(k)}
                    for i, ((_, q), k) in enumerate(zip(pairs, made["keys"]))]
        dataset = VQADataset(examples, self.tokenizer, _Rows(made["rows"], made["geometry"]),
                             answer_vocab=self.answer_vocab, max_seq_length=self.max_seq_length, spatial=self.spatial)
        logits, attention = self._forward(dataset, output_attentions=explain)
        logits[:, 0] = -np.inf  # <unk>: never an answer, as in run_predict.py
        probs = _softmax(logits)
        out = []
        for i, k in enumerate(made["keys"]):
            best = np.argsort(-probs[i], kind="stable")[:top_k]
            item = {"answers": [{"answer": self.answer_vocab[j], "score": float(probs[i, j])} for j in best],
                    "geometry": made["geometry"][k], "image": made["images"][k]}
            if explain:
                item["attention"] = attention[i]
            out.append(item)
        return out


class VisualReasoning(_Pipeline):
    """NLVR2: ``(image, image2, statement)`` -> ``{"answer": True/False, "score": P(answer)}``."""

    task = "visual-reasoning"

    def __init__(self, model, device="cpu", weights=None, engine=None):
        from .modeling import VisualBertForVisualReasoning

        self.head = VisualBertForVisualReasoning
        super().__init__(model, device, weights, engine)

    def __call__(self, image=None, image2=None, statement=None, features=None, features2=None):
        from .inputs import NLVR2Dataset

        if (image is None and features is None) or (image2 is None and features2 is None) or statement is None:
            raise ValueError("pass image=, image2= (or features=, features2=) and statement=")
        made = self._features_of([features if features is not None else image,
                                  features2 if features2 is not None else image2], None)
        example = {"sentence": _question(statement), "identifier": "ask-0", "label": None,
                   "image_keys": made["keys"]}
        dataset = NLVR2Dataset([example], self.tokenizer, _Rows(made["rows"], made["geometry"]),
                               max_seq_length=self.max_seq_length, spatial=self.spatial)
        logits, _ = self._forward(dataset)
        p_true = float(_softmax(logits)[0, 1])
        return {"answer": p_true >= 0.5, "score": p_true if p_true >= 0.5 else 1.0 - p_true}


def _features_of(pipe, sources, boxes):
    """Each distinct source's rows, made once: images in one backbone batch, (rows, geometry) as given."""
    from .configuration import SPATIAL_DIM

    keys, rows, geometry, images = [], {}, {}, {}
    to_make, seen = [], {}
    for src in sources:
        ident = ("features", id(src)) if isinstance(src, tuple) else (
            ("path", os.fspath(src)) if isinstance(src, (str, os.PathLike)) else ("object", id(src)))
        if ident not in seen:
            seen[ident] = f"image{len(seen)}"
            key = seen[ident]
            if isinstance(src, tuple):
                rows[key] = np.asarray(src[0], dtype=np.float32)
                geometry[key] = None if src[1] is None else np.asarray(src[1], dtype=np.float32)
                images[key] = None
                # a spatial model's projection also takes the SPATIAL_DIM box values the dataset appends
                dim = pipe.model.config.visual_embedding_dim - (SPATIAL_DIM if pipe.spatial else 0)
                if rows[key].ndim != 2 or rows[key].shape[1] != dim:
                    raise ValueError(f"features have shape {tuple(rows[key].shape)}, the model needs [N, {dim}]")
            else:
                to_make.append((key, src))
        keys.append(seen[ident])
    if to_make:
        if boxes is not None and len(to_make) != 1:
            raise ValueError("boxes= are for one image")
        pil = [load_image(src) for _, src in to_make]
        with pipe.lock:
            made = pipe.featurizer(pil, None if boxes is None else [boxes])
        for (key, _), im, (r, g) in zip(to_make, pil, made):
            rows[key], geometry[key], images[key] = r, g, im
    return {"keys": keys, "rows": rows, "geometry": geometry, "images": images}


def _pairs(image, question, features):
    """[(image or features, question)] and whether the call was for one pair (None: nothing given)."""
    if isinstance(image, list) and question is None and image and isinstance(image[0], dict):
        pairs = []
        for item in image:
            if "question" not in item or ("image" not in item and "features" not in item):
                raise ValueError("each input dict needs 'image' (or 'features') and 'question'")
            pairs.append((item.get("features", item.get("image")), item["question"]))
        return pairs, False
    source = features if features is not None else image
    if source is None or question is None:
        return [], None
    if isinstance(question, (list, tuple)):
        if isinstance(source, list):
            if len(source) != len(question):
                raise ValueError(f"{len(source)} images but {len(question)} questions")
            return list(zip(source, question)), False
        return [(source, q) for q in question], False
    if isinstance(source, list):
        return [(s, question) for s in source], False
    return [(source, question)], True


def _question(text):
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the question is empty")
    return text.strip()


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


TASKS = {"visual-question-answering": VisualQuestionAnswering, "vqa": VisualQuestionAnswering,
         "visual-reasoning": VisualReasoning, "nlvr2": VisualReasoning}


def pipeline(task, model, device="cpu", weights=None, engine=None):
    """A callable for ``task`` (``visual-question-answering`` / ``vqa``, ``visual-reasoning`` / ``nlvr2``) over
    the trained model directory ``model`` (RUN/best, RUN/model, a checkpoint, or RUN itself).

    ``engine``: ``"onnxruntime"`` (the default on the CPU, the fastest measured: the model exported once to
    ``<model>/inference/``, converted to ONNX and run by ONNX Runtime), ``"paddle_inference"`` (CPU: that
    export run by Paddle's deployment predictor) or ``"dygraph"`` (the model as trained; the default on a
    GPU). All give the same answers (logits within 1e-4)."""
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}' (expected one of: {', '.join(TASKS)})")
    return TASKS[task](model, device=device, weights=weights, engine=engine)
