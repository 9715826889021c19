"""VisualBERT (Li et al., 2019) on PaddlePaddle: base model and five task heads.

The math and every parameter name follow HuggingFace ``transformers``' VisualBERT, so a converted
checkpoint is a plain copy of its state dict (Linear weights transposed). Where ``transformers``
is known to be wrong (``bypass_transformer``, ``special_visual_initialize`` being undone by weight
init) this file does what the paper and the original code do instead; see the class docstrings.
The configuration is in ``visualbert.configuration``; faster CPU layers for this model are in
``visualbert.cpu`` (``accelerate(model)``).
"""
import math
import os
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddlenlp.transformers import PretrainedModel
from paddlenlp.transformers.model_outputs import (
    BaseModelOutputWithPooling,
    ModelOutput,
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
)

from .configuration import ACTIVATIONS, RELEASED_MODELS, VisualBertConfig, released_name

__all__ = [
    "VisualBertConfig",
    "VisualBertPretrainedModel",
    "VisualBertModel",
    "VisualBertForPreTraining",
    "VisualBertForQuestionAnswering",
    "VisualBertForVisualReasoning",
    "VisualBertForMultipleChoice",
    "VisualBertForRegionToPhraseAlignment",
    "VisualBertForPreTrainingOutput",
    "RELEASED_MODELS",
    "HEADS",
]


def _gather_positions(hidden_states, positions):
    """[B, L, hidden] at int positions [B, P] -> [B, P, hidden]."""
    rows = paddle.arange(positions.shape[0], dtype="int64").unsqueeze(1).expand(positions.shape)
    return paddle.gather_nd(hidden_states, paddle.stack([rows, positions.astype("int64")], axis=-1))


def _mask_bias(mask, dtype):
    """1/0 keep-mask [B, L] -> additive bias broadcastable to attention scores [B, H, Lq, L]."""
    mask = mask.astype(dtype)
    return ((1.0 - mask) * paddle.finfo(dtype).min).unsqueeze([1, 2])


class VisualBertEmbeddings(nn.Layer):
    def __init__(self, config):
        super().__init__()
        # No padding_idx anywhere: Paddle would force that row's output to zero, PyTorch does not.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.visual_projection = nn.Linear(config.visual_embedding_dim, config.hidden_size)
        self.special_visual_initialize = config.special_visual_initialize
        self.copy_text_tables_to_visual()

    def copy_text_tables_to_visual(self):
        """The paper's initialisation: visual segment/position tables start as the text ones."""
        if self.special_visual_initialize:
            self.visual_token_type_embeddings.weight.set_value(self.token_type_embeddings.weight.clone())
            self.visual_position_embeddings.weight.set_value(self.position_embeddings.weight.clone())

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                visual_embeds=None, visual_token_type_ids=None, image_text_alignment=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, text_len = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = paddle.arange(text_len, dtype="int64").unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = paddle.zeros([batch, text_len], dtype="int64")
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)

        if visual_embeds is not None:
            num_regions = visual_embeds.shape[1]
            if visual_token_type_ids is None:
                visual_token_type_ids = paddle.ones([batch, num_regions], dtype="int64")
            # Every region sits at visual position 0; alignment adds the mean text position of its words.
            visual_position = self.visual_position_embeddings(paddle.zeros([batch, num_regions], dtype="int64"))
            if image_text_alignment is not None:
                if image_text_alignment.shape[1] < num_regions:
                    raise ValueError(
                        f"image_text_alignment covers {image_text_alignment.shape[1]} regions, "
                        f"visual_embeds has {num_regions}"
                    )
                # Detector fine-tuning can pad the alignment longer than the regions kept.
                alignment = image_text_alignment[:, :num_regions]
                valid = (alignment != -1).astype(embeddings.dtype)
                aligned = self.position_embeddings(paddle.clip(alignment, min=0)) * valid.unsqueeze(-1)
                count = paddle.clip(valid.sum(axis=2, keepdim=True), min=1.0)
                visual_position = aligned.sum(axis=2) / count + visual_position
            visual = (self.visual_projection(visual_embeds) + visual_position
                      + self.visual_token_type_embeddings(visual_token_type_ids))
            embeddings = paddle.concat([embeddings, visual], axis=1)

        return self.dropout(self.LayerNorm(embeddings))


# Paddle's fused attention kernels are taken only in half precision: in float32 Paddle 3.3 picks its
# memory-efficient kernel, which refuses a mask whose query dimension is not the query length
# (and the CPU has no fused kernel at all: the call falls back to a slower composition).
_FUSED_DTYPES = (paddle.float16, paddle.bfloat16)


def _on_cpu(tensor):
    return paddle.in_dynamic_mode() and tensor.place.is_cpu_place()


def _kernel_mask(bias, batch, query_len, key_len, dtype):
    """The additive bias as the fused kernels read it: a materialised [B, 1 or heads, Lq, Lk] in the query's dtype.

    Flash attention reads mask rows ``Lk`` apart, so a [B, 1, 1, Lk] padding bias would hand query
    row r of sample b the padding of sample b + r; the memory-efficient kernel needs Lq rows. The
    bias is clipped to the dtype's range first, so fp16's -65504 stands in for float32's minimum
    instead of -inf.
    """
    bias = paddle.clip(bias.astype("float32"), min=float(paddle.finfo(dtype).min)).astype(dtype)
    return bias.expand([batch, bias.shape[1], query_len, key_len]).contiguous()  # a bias per head keeps its heads


class VisualBertSelfAttention(nn.Layer):
    # Paddle's fused scaled-dot-product attention on accelerators in fp16/bf16 (AMP) whenever the
    # probabilities are not returned; set False to force the matmul path everywhere. fp32 and the
    # CPU always take the matmul path (see _FUSED_DTYPES and BENCHMARKS.md).
    use_fused = True

    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def split_heads(self, x):
        """[B, L, heads * size] -> [B, L, heads, size] (the fused kernel's layout). The 0s keep B and L as they
        are: an exported program then reshapes by constants instead of computing each shape at run time."""
        return x.reshape([0, 0, self.num_attention_heads, self.attention_head_size])

    def takes_fused(self, projected, output_attentions, head_mask):
        """Whether this call goes through the fused kernel: an accelerator computing in fp16/bf16."""
        return (self.use_fused and not output_attentions and head_mask is None
                and projected.dtype in _FUSED_DTYPES and not _on_cpu(projected))

    def _fused(self, query_layer, key_layer, value_layer, attention_mask):
        """The same math through Paddle's fused kernel ([B, L, heads, size] in, [B, Lq, hidden] out).

        Checked against the matmul path, and the mask it is handed, in tests/test_modeling.py.
        """
        batch, query_len = query_layer.shape[:2]
        mask = None
        if attention_mask is not None:
            mask = _kernel_mask(attention_mask, batch, query_len, key_layer.shape[1], query_layer.dtype)
        context = F.scaled_dot_product_attention(query_layer, key_layer, value_layer, attn_mask=mask,
                                                 dropout_p=self.dropout.p, training=self.training)
        return context.reshape([batch, query_len, self.all_head_size])

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
                query_states=None):
        """``attention_mask``: additive, broadcastable to the scores [B, heads, Lq, L] (``_mask_bias``).

        ``query_states`` [B, Lq, hidden]: attend from these instead of from every position (all of
        ``hidden_states`` still serve as keys and values)."""
        queries = hidden_states if query_states is None else query_states
        query_layer = self.split_heads(self.query(queries))
        key_layer = self.split_heads(self.key(hidden_states))
        value_layer = self.split_heads(self.value(hidden_states))
        if self.takes_fused(query_layer, output_attentions, head_mask):
            return self._fused(query_layer, key_layer, value_layer, attention_mask), None
        query_layer, key_layer, value_layer = (x.transpose([0, 2, 1, 3]) for x in (query_layer, key_layer, value_layer))

        attention_scores = paddle.matmul(query_layer, key_layer, transpose_y=True)
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            attention_scores = attention_scores + attention_mask
        attention_probs = self.dropout(F.softmax(attention_scores, axis=-1))
        if head_mask is not None:
            attention_probs = attention_probs * head_mask

        context_layer = paddle.matmul(attention_probs, value_layer).transpose([0, 2, 1, 3])
        context_layer = context_layer.reshape([0, 0, self.all_head_size])
        return context_layer, (attention_probs if output_attentions else None)


class VisualBertAttention(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.self = VisualBertSelfAttention(config)
        self.output = VisualBertOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
                query_states=None):
        context, probs = self.self(hidden_states, attention_mask, head_mask, output_attentions, query_states)
        return self.output(context, hidden_states if query_states is None else query_states), probs


class VisualBertIntermediate(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states):
        return self.act(self.dense(hidden_states))


class VisualBertOutput(nn.Layer):
    """Project back to hidden size, dropout, add the residual, LayerNorm: after attention
    (``attention.output``, from hidden size) and after the feed-forward (``output``, from intermediate)."""

    def __init__(self, config, input_size):
        super().__init__()
        self.dense = nn.Linear(input_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class VisualBertLayer(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.attention = VisualBertAttention(config)
        self.intermediate = VisualBertIntermediate(config)
        self.output = VisualBertOutput(config, config.intermediate_size)

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
                query_states=None):
        attended, probs = self.attention(hidden_states, attention_mask, head_mask, output_attentions, query_states)
        return self.output(self.intermediate(attended), attended), probs


class VisualBertEncoder(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.LayerList([VisualBertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
                output_hidden_states=False, last_layer_positions=None):
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            layer_head_mask = None if head_mask is None else head_mask[i]
            if last_layer_positions is not None and i == len(self.layer) - 1:
                hidden_states, probs = layer(hidden_states, attention_mask, layer_head_mask, output_attentions,
                                             _gather_positions(hidden_states, last_layer_positions))
            else:
                hidden_states, probs = layer(hidden_states, attention_mask, layer_head_mask, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return hidden_states, all_hidden, all_attentions


class VisualBertPooler(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return paddle.tanh(self.dense(hidden_states[:, 0]))


class VisualBertPredictionHeadTransform(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.act(self.dense(hidden_states)))


class VisualBertLMPredictionHead(nn.Layer):
    """MLM decoder. Tied: the caller passes the word-embedding table [vocab, hidden] as decoder.

    Untied (``tie_word_embeddings=False``, and always in the region head, as in ``transformers``)
    it owns ``decoder.weight``.
    """

    def __init__(self, config, tied):
        super().__init__()
        self.transform = VisualBertPredictionHeadTransform(config)
        self.decoder = None if tied else nn.Linear(config.hidden_size, config.vocab_size, bias_attr=False)
        self.bias = self.create_parameter([config.vocab_size], is_bias=True)

    def forward(self, hidden_states, word_embeddings=None):
        hidden_states = self.transform(hidden_states)
        if self.decoder is None:
            return paddle.matmul(hidden_states, word_embeddings, transpose_y=True) + self.bias
        return self.decoder(hidden_states) + self.bias


class VisualBertPreTrainingHeads(nn.Layer):
    def __init__(self, config, tied):
        super().__init__()
        self.predictions = VisualBertLMPredictionHead(config, tied)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class VisualBertPretrainedModel(PretrainedModel):
    """Weight init, the released-name registry and from_pretrained's offline message."""

    config_class = VisualBertConfig
    base_model_prefix = "visual_bert"
    pretrained_init_configuration = VisualBertConfig.pretrained_init_configuration
    pretrained_resource_files_map = {"model_state": {}}

    def _init_weights(self, layer):
        std = self.config.initializer_range
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            layer.weight.set_value(paddle.normal(0.0, std, layer.weight.shape).astype(layer.weight.dtype))
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            layer.bias.set_value(paddle.zeros_like(layer.bias))
        elif isinstance(layer, nn.LayerNorm):
            layer.weight.set_value(paddle.ones_like(layer.weight))
            layer.bias.set_value(paddle.zeros_like(layer.bias))
        elif isinstance(layer, VisualBertLMPredictionHead):
            layer.bias.set_value(paddle.zeros_like(layer.bias))
        elif isinstance(layer, VisualBertEmbeddings):
            # apply() visits children first, so the text tables were just re-drawn: copy them again
            # or the paper's initialisation is silently lost (transformers loses it this way).
            layer.copy_text_tables_to_visual()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        name = released_name(pretrained_model_name_or_path)
        if name and not os.path.isdir(pretrained_model_name_or_path):
            from paddlenlp.utils.env import MODEL_HOME

            local = os.path.join(MODEL_HOME, name)
            if not os.path.isdir(local):
                raise FileNotFoundError(
                    f"{name}: no Paddle weights are published for this model; download the HuggingFace "
                    f"checkpoint uclanlp/{name} and run `python -m visualbert.convert --src <hf_dir> "
                    f"--dst {local}` (or pass any converted directory)"
                )
            pretrained_model_name_or_path = local
        if kwargs.get("state_dict") is None:
            # PaddleNLP would paddle.load (plain pickle) the weights: read them without trusting them
            from .safeload import load_pretrained_weights

            kwargs["state_dict"] = load_pretrained_weights(pretrained_model_name_or_path,
                                                           use_safetensors=kwargs.get("use_safetensors") is not False)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def _finish(output, return_dict):
    return output if return_dict is None or return_dict else output.to_tuple()


class VisualBertModel(VisualBertPretrainedModel):
    """Text + region embeddings through one BERT encoder.

    ``bypass_transformer``: the text runs alone through the encoder (text mask only), the regions'
    embeddings are appended to its output and one extra joint layer (``additional_layer``) sees
    both. ``hidden_states``/``attentions`` then hold the text encoder's entries plus the joint
    layer's. (``transformers``' version of this path indexes the mask wrongly and crashes.)

    ``last_layer_positions`` (int [B, P], optional): run the last layer only at these positions, the
    ones a head reads (every position still serves as key and value there), so a classifier over
    one token does not pay for the whole last layer. ``last_hidden_state`` is then [B, P, hidden]
    and ``pooler_output`` None; it cannot be combined with ``output_hidden_states`` or
    ``output_attentions``, which ask for every position.
    """

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = VisualBertEncoder(config)
        self.pooler = VisualBertPooler(config) if add_pooling_layer else None
        self.bypass_transformer = config.bypass_transformer
        if self.bypass_transformer:
            self.additional_layer = VisualBertLayer(config)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _head_mask(self, head_mask, dtype):
        if head_mask is None:
            return None
        head_mask = paddle.to_tensor(head_mask).astype(dtype)
        if head_mask.ndim == 1:
            head_mask = head_mask.unsqueeze(0).expand([self.config.num_hidden_layers, -1])
        return head_mask.reshape([self.config.num_hidden_layers, 1, -1, 1, 1])

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                last_layer_positions=None):
        output_attentions = bool(output_attentions)
        output_hidden_states = bool(output_hidden_states)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if last_layer_positions is not None and (output_attentions or output_hidden_states):
            raise ValueError("last_layer_positions cannot be combined with output_attentions/output_hidden_states")
        batch, text_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if attention_mask is None:
            attention_mask = paddle.ones([batch, text_len], dtype="int64")
        full_mask = attention_mask
        if visual_embeds is not None:
            if visual_attention_mask is None:
                visual_attention_mask = paddle.ones(visual_embeds.shape[:2], dtype="int64")
            full_mask = paddle.concat([attention_mask.astype("int64"), visual_attention_mask.astype("int64")], axis=1)

        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                                           visual_embeds, visual_token_type_ids, image_text_alignment)
        dtype = embedding_output.dtype
        full_bias = _mask_bias(full_mask, dtype)

        if self.bypass_transformer and visual_embeds is not None:
            text_out, hidden, attentions = self.encoder(
                embedding_output[:, :text_len], _mask_bias(attention_mask, dtype),
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            )
            joint = paddle.concat([text_out, embedding_output[:, text_len:]], axis=1)
            queries = None if last_layer_positions is None else _gather_positions(joint, last_layer_positions)
            sequence_output, probs = self.additional_layer(joint, full_bias, None, output_attentions, queries)
            if output_hidden_states:
                hidden.append(sequence_output)
            if output_attentions:
                attentions.append(probs)
        else:
            sequence_output, hidden, attentions = self.encoder(
                embedding_output, full_bias, self._head_mask(head_mask, dtype), output_attentions, output_hidden_states,
                last_layer_positions,
            )
        pooled_output = None
        if self.pooler is not None and last_layer_positions is None:
            pooled_output = self.pooler(sequence_output)
        return _finish(BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        ), return_dict)


@dataclass
class VisualBertForPreTrainingOutput(ModelOutput):
    """``transformers``' pre-training output plus the two loss terms, for separate logging."""

    loss: Optional[paddle.Tensor] = None
    prediction_logits: paddle.Tensor = None
    seq_relationship_logits: paddle.Tensor = None
    hidden_states: Optional[Tuple[paddle.Tensor]] = None
    attentions: Optional[Tuple[paddle.Tensor]] = None
    masked_lm_loss: Optional[paddle.Tensor] = None
    sentence_image_loss: Optional[paddle.Tensor] = None


def _mean_ignoring(logits, labels, ignore_index=-100):
    """Cross-entropy averaged over the labels that are not ``ignore_index``.

    Paddle's own ``reduction="mean"`` divides by every label, ignored ones included.
    """
    per_token = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    count = (labels != ignore_index).astype(per_token.dtype).sum()
    return per_token.sum() / paddle.clip(count, min=1.0)


def _soft_target_kl(logits, targets):
    """KL(targets || softmax(logits)) over the last axis, summed, divided by dim 0 ('batchmean').

    Written out instead of F.kl_div so that zero targets contribute exactly 0, as torch's does.
    """
    log_probs = F.log_softmax(logits, axis=-1)
    targets = targets.astype(log_probs.dtype)
    safe = paddle.where(targets > 0, targets, paddle.ones_like(targets))
    pointwise = paddle.where(targets > 0, targets * (paddle.log(safe) - log_probs), paddle.zeros_like(targets))
    return pointwise.sum() / logits.shape[0]


class VisualBertForPreTraining(VisualBertPretrainedModel):
    """Masked language modelling + sentence-image matching (label 1 = the caption matches)."""

    def __init__(self, config):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.cls = VisualBertPreTrainingHeads(config, tied=config.tie_word_embeddings)

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def _decoder_table(self):
        return self.visual_bert.embeddings.word_embeddings.weight

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None, sentence_image_labels=None, predict_masked_only=False):
        """``labels``: MLM targets, -100 = ignore, of length T (regions are then ignored) or T+V.

        ``predict_masked_only``: with labels, decode only the positions whose label is not -100;
        ``prediction_logits`` is then [num_labelled, vocab] and the loss equals the full one.
        """
        outputs = self.visual_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds, visual_embeds=visual_embeds,
            visual_attention_mask=visual_attention_mask, visual_token_type_ids=visual_token_type_ids,
            image_text_alignment=image_text_alignment, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True)
        sequence_output, pooled_output = outputs.last_hidden_state, outputs.pooler_output
        seq_relationship_logits = self.cls.seq_relationship(pooled_output)
        total_len = sequence_output.shape[1]

        masked_lm_loss = sentence_image_loss = None
        if labels is not None:
            labels = labels.astype("int64")
            if labels.shape[1] != total_len:
                text_len = total_len - (visual_embeds.shape[1] if visual_embeds is not None else 0)
                if labels.shape[1] != text_len:
                    raise ValueError(f"labels have length {labels.shape[1]}; expected the text length or {total_len}")
                pad = paddle.full([labels.shape[0], total_len - labels.shape[1]], -100, dtype="int64")
                labels = paddle.concat([labels, pad], axis=1)
        if labels is not None and predict_masked_only:
            flat_labels = labels.reshape([-1])
            picked = paddle.nonzero(flat_labels != -100).reshape([-1])
            hidden = paddle.gather(sequence_output.reshape([-1, sequence_output.shape[-1]]), picked)
            prediction_logits = self.cls.predictions(hidden, self._decoder_table())
            if picked.shape[0] == 0:
                masked_lm_loss = prediction_logits.sum() * 0.0
            else:
                masked_lm_loss = F.cross_entropy(prediction_logits, paddle.gather(flat_labels, picked))
        else:
            prediction_logits = self.cls.predictions(sequence_output, self._decoder_table())
            if labels is not None:
                masked_lm_loss = _mean_ignoring(prediction_logits.reshape([-1, prediction_logits.shape[-1]]),
                                                labels.reshape([-1]))
        if sentence_image_labels is not None:
            sentence_image_loss = F.cross_entropy(seq_relationship_logits,
                                                  sentence_image_labels.reshape([-1]).astype("int64"))
        losses = [x for x in (masked_lm_loss, sentence_image_loss) if x is not None]
        return _finish(VisualBertForPreTrainingOutput(
            loss=sum(losses[1:], losses[0]) if losses else None,
            prediction_logits=prediction_logits,
            seq_relationship_logits=seq_relationship_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            masked_lm_loss=masked_lm_loss,
            sentence_image_loss=sentence_image_loss,
        ), return_dict)


class VisualBertForQuestionAnswering(VisualBertPretrainedModel):
    """VQA: classify the hidden state of the ``[MASK]`` before the last ``[SEP]`` (index sum(mask)-2).

    ``logits`` are always raw scores (``transformers`` returns log-softmax when labels are given).
    Losses against soft targets [B, num_labels]: ``loss_type="kl"`` (default, as ``transformers``):
    KL-div, batchmean, of log_softmax(logits); ``"bce"``: BCE-with-logits averaged over all
    elements then multiplied by num_labels, i.e. summed over answers and averaged over questions
    (the MMF / original VisualBERT convention).
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = VisualBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.cls = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None, loss_type="kl"):
        batch, text_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        lengths = (attention_mask.astype("int64").sum(axis=1) if attention_mask is not None
                   else paddle.full([batch], text_len, dtype="int64"))
        positions = (lengths - 2).unsqueeze(1)
        every_position = bool(output_attentions or output_hidden_states)
        outputs = self.visual_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds, visual_embeds=visual_embeds,
            visual_attention_mask=visual_attention_mask, visual_token_type_ids=visual_token_type_ids,
            image_text_alignment=image_text_alignment, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
            last_layer_positions=None if every_position else positions)
        picked = outputs.last_hidden_state
        if every_position:
            picked = _gather_positions(picked, positions)
        logits = self.cls(self.dropout(picked[:, 0]))

        loss = None
        if labels is not None:
            # in float32: under bf16 AMP the soft scores would round (0.3 -> 0.3008) and so would the loss
            scores, labels = logits.astype("float32"), labels.astype("float32")
            if loss_type == "kl":
                loss = _soft_target_kl(scores, labels)
            elif loss_type == "bce":
                loss = F.binary_cross_entropy_with_logits(scores, labels) * self.num_labels
            else:
                raise ValueError(f"loss_type must be 'kl' or 'bce', not {loss_type!r}")
        return _finish(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions), return_dict)


class VisualBertForVisualReasoning(VisualBertPretrainedModel):
    """NLVR2: pooled output -> dropout -> Linear(hidden, num_labels); labels are class ids [B]."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = VisualBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.cls = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None):
        # The pooler reads position 0 ([CLS]) only, so the last layer runs only there.
        every_position = bool(output_attentions or output_hidden_states)
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        outputs = self.visual_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds, visual_embeds=visual_embeds,
            visual_attention_mask=visual_attention_mask, visual_token_type_ids=visual_token_type_ids,
            image_text_alignment=image_text_alignment, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
            last_layer_positions=None if every_position else paddle.zeros([batch, 1], "int64"))
        pooled = outputs.pooler_output if every_position else self.visual_bert.pooler(outputs.last_hidden_state)
        logits = self.cls(self.dropout(pooled))
        loss = None if labels is None else F.cross_entropy(logits, labels.reshape([-1]).astype("int64"))
        return _finish(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions), return_dict)


class VisualBertForMultipleChoice(VisualBertPretrainedModel):
    """VCR: inputs carry a choice axis ([B, C, T], visual [B, C, V, D]); logits [B, C].

    Unlike ``transformers``, ``image_text_alignment`` [B, C, V, K] is flattened with the rest.
    """

    def __init__(self, config):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.cls = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                labels=None):
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]

        def flat(x, trailing=1):  # [B, C, ...] -> [B * C, ...]: every choice is a sequence of its own
            return None if x is None else x.reshape([-1] + list(x.shape[-trailing:]))

        outputs = self.visual_bert(
            input_ids=flat(input_ids), attention_mask=flat(attention_mask), token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids), head_mask=head_mask, inputs_embeds=flat(inputs_embeds, 2),
            visual_embeds=flat(visual_embeds, 2), visual_attention_mask=flat(visual_attention_mask),
            visual_token_type_ids=flat(visual_token_type_ids), image_text_alignment=flat(image_text_alignment, 2),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.cls(self.dropout(outputs.pooler_output)).reshape([-1, num_choices])
        loss = None if labels is None else F.cross_entropy(logits, labels.reshape([-1]).astype("int64"))
        return _finish(MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                 attentions=outputs.attentions), return_dict)


class VisualBertRegionToPhraseAttention(nn.Layer):
    """One attention head scoring each selected phrase position against every region."""

    def __init__(self, config):
        super().__init__()
        head_size = config.hidden_size // config.num_attention_heads
        self.attention_head_size = head_size
        self.query = nn.Linear(config.hidden_size, head_size)
        self.key = nn.Linear(config.hidden_size, head_size)
        # Unused by the scores; kept so checkpoints trained with it load without unexpected keys.
        self.value = nn.Linear(config.hidden_size, head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, query, key, visual_attention_mask):
        scores = paddle.matmul(self.query(query), self.key(key), transpose_y=True) / math.sqrt(self.attention_head_size)
        return scores + _mask_bias(visual_attention_mask, scores.dtype).squeeze(1)


class VisualBertForRegionToPhraseAlignment(VisualBertPretrainedModel):
    """Flickr30k Entities: logits [B, P, V] from ``region_to_phrase_position`` [B, P] (-1 = padding).

    Loss: KL-div (batchmean) of log_softmax(logits) against ``labels`` [B, P, V], as
    ``transformers``. The MLM heads are carried (untied, as there) but not used.
    """

    def __init__(self, config):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.cls = VisualBertPreTrainingHeads(config, tied=False)
        self.attention = VisualBertRegionToPhraseAttention(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                region_to_phrase_position=None, labels=None):
        if visual_embeds is None or region_to_phrase_position is None:
            raise ValueError("region-to-phrase alignment needs visual_embeds and region_to_phrase_position")
        if visual_attention_mask is None:
            visual_attention_mask = paddle.ones(visual_embeds.shape[:2], dtype="int64")
        outputs = self.visual_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds, visual_embeds=visual_embeds,
            visual_attention_mask=visual_attention_mask, visual_token_type_ids=visual_token_type_ids,
            image_text_alignment=image_text_alignment, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True)
        sequence_output = outputs.last_hidden_state
        positions = paddle.clip(region_to_phrase_position.astype("int64"), min=0)
        gather_index = positions.unsqueeze(-1).expand([-1, -1, sequence_output.shape[-1]])
        phrases = paddle.take_along_axis(sequence_output, gather_index, axis=1)
        regions = sequence_output[:, sequence_output.shape[1] - visual_embeds.shape[1]:]
        logits = self.attention(phrases, regions, visual_attention_mask)
        loss = None if labels is None else _soft_target_kl(logits, labels)
        return _finish(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                attentions=outputs.attentions), return_dict)


class Head(NamedTuple):
    model: type  # the class
    described: str  # how messages name it: "the checkpoint has a VQA head"


# Every model class, by the name `python -m visualbert.convert --head` takes.
HEADS = {
    "base": Head(VisualBertModel, "no task head"),
    "pretraining": Head(VisualBertForPreTraining, "the pre-training heads"),
    "vqa": Head(VisualBertForQuestionAnswering, "a VQA head"),
    "nlvr2": Head(VisualBertForVisualReasoning, "an NLVR2 head"),
    "multiple_choice": Head(VisualBertForMultipleChoice, "a multiple-choice head"),
    "region_alignment": Head(VisualBertForRegionToPhraseAlignment, "a region-to-phrase head"),
}
