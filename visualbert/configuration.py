"""VisualBERT's configuration and the names of the released checkpoints."""
import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import PretrainedConfig

from .geometry import GEOMETRY_DIM

__all__ = ["VisualBertConfig", "RELEASED_MODELS", "ACTIVATIONS", "SPATIAL_DIM", "released_name"]

# With ``add_spatial_features`` each region's features end with its box geometry, as the original
# Flickr30K configs did (visual_embedding_dim 2054 = 2048 + 6): x1, y1, x2, y2, w, h normalised by
# the image size, as the feature stores keep them.
SPATIAL_DIM = GEOMETRY_DIM

# The nine checkpoints uclanlp released, with the head class each one was trained as and what
# differs from a BERT-base VisualBertConfig.
RELEASED_MODELS = {
    "visualbert-vqa": ("VisualBertForQuestionAnswering", {"visual_embedding_dim": 2048, "num_labels": 3129}),
    "visualbert-vqa-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 2048}),
    "visualbert-vqa-coco-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 2048}),
    "visualbert-nlvr2": ("VisualBertForVisualReasoning", {"visual_embedding_dim": 1024, "num_labels": 2}),
    "visualbert-nlvr2-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 1024}),
    "visualbert-nlvr2-coco-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 1024}),
    "visualbert-vcr": ("VisualBertForMultipleChoice", {"visual_embedding_dim": 512}),
    "visualbert-vcr-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 512}),
    "visualbert-vcr-coco-pre": ("VisualBertForPreTraining", {"visual_embedding_dim": 512}),
}


# hidden_act as transformers' configs name it -> the function the model applies; the config refuses
# any other name, so a checkpoint never loads into a model that cannot run it.
ACTIVATIONS = {
    "gelu": F.gelu,  # exact (erf), as transformers' "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate=True),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": paddle.tanh,
}


def released_name(name):
    """The released checkpoint ``name`` stands for ("uclanlp/visualbert-vqa" and "visualbert-vqa" both
    give "visualbert-vqa"), or None."""
    name = str(name)
    name = name[len("uclanlp/"):] if name.startswith("uclanlp/") else name
    return name if name in RELEASED_MODELS else None


def _released_config(name):
    arch, overrides = RELEASED_MODELS[name]
    return dict(architectures=[arch], special_visual_initialize=True, **overrides)


class VisualBertConfig(PretrainedConfig):
    """Hyper-parameters of VisualBERT; field names and defaults are those of ``transformers``."""

    model_type = "visual_bert"
    pretrained_init_configuration = {name: _released_config(name) for name in RELEASED_MODELS}

    def __init__(self, vocab_size=30522, hidden_size=768, visual_embedding_dim=512, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 initializer_range=0.02, layer_norm_eps=1e-12, bypass_transformer=False,
                 special_visual_initialize=True, add_spatial_features=False, pad_token_id=1, bos_token_id=0,
                 eos_token_id=2, **kwargs):
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; expected one of {', '.join(ACTIVATIONS)}")
        self.vocab_size, self.hidden_size, self.visual_embedding_dim = vocab_size, hidden_size, visual_embedding_dim
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.intermediate_size, self.hidden_act = intermediate_size, hidden_act
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.initializer_range, self.layer_norm_eps = initializer_range, layer_norm_eps
        self.bypass_transformer, self.special_visual_initialize = bypass_transformer, special_visual_initialize
        # visual_embedding_dim then counts the SPATIAL_DIM box values appended to each region's features
        self.add_spatial_features = bool(add_spatial_features)
