"""CPU versions of the layers a VisualBERT model is made of (visualbert.cpu.accelerate swaps them in).

Each subclasses the stock layer and overrides only ``forward``: parameters, names and semantics
are the stock layer's, and on anything but a CPU tensor in eager mode it is the stock layer.
"""
import math

import paddle
import paddle.nn as nn

from ..modeling import VisualBertSelfAttention
from . import kernels


class Linear(nn.Linear):
    """``nn.Linear``; on CPU, bias added inside the GEMM and its gradient summed by a GEMV."""

    def forward(self, x):
        if self.bias is None or not kernels.eager_on_cpu(x):
            return super().forward(x)
        out = kernels.LinearFunction.apply(x.reshape([-1, x.shape[-1]]), self.weight, self.bias)
        return out.reshape(x.shape[:-1] + [out.shape[-1]])


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm``; on CPU by oneDNN's kernels (Paddle's backward is far slower on BERT-base shapes)."""

    def forward(self, x):
        if (not kernels.onednn_route(x, "layer_norm") or self.weight is None or self.bias is None
                or len(self._normalized_shape) != 1):
            return super().forward(x)
        if x.stop_gradient and self.weight.stop_gradient and self.bias.stop_gradient:
            return kernels.layer_norm(x, self.weight, self.bias, self._epsilon)[0]
        return kernels.LayerNormFunction.apply(x, self.weight, self.bias, self._epsilon)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (upscale in train); on CPU the keep-mask is drawn by numpy (kernels.dropout_mask)."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if not kernels.numpy_route(x, "dropout") or self.mode != "upscale_in_train" or self.axis is not None:
            return super().forward(x)
        return x * kernels.dropout_mask(x.shape, self.p)


class SelfAttention(VisualBertSelfAttention):
    """The model's self-attention with heads folded into the batch axis, so that both products are
    plain batched GEMMs; the head permutes, the scaled and masked softmax and the dropout are the
    CPU kernels'. Off the CPU (or in a traced graph) it is the model's own forward."""

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
                query_states=None):
        if not kernels.eager_on_cpu(hidden_states):
            return super().forward(hidden_states, attention_mask, head_mask, output_attentions, query_states)
        queries = hidden_states if query_states is None else query_states
        batch, length = hidden_states.shape[:2]
        q_len = queries.shape[1]
        heads, size = self.num_attention_heads, self.attention_head_size

        # [B, L, H*d] -> [B*H, L, d]; the keys straight to [B*H, d, L].
        def split(x, perm):
            x = kernels.permute(x.reshape([batch, -1, heads, size]), perm)
            return x.reshape([batch * heads] + x.shape[2:])

        query = split(self.query(queries), [0, 2, 1, 3])
        key_t = split(self.key(hidden_states), [0, 2, 3, 1])
        value = split(self.value(hidden_states), [0, 2, 1, 3])
        scores = paddle.bmm(query, key_t).reshape([batch, heads, q_len, length])
        probs = self.dropout(kernels.attention_softmax(scores, attention_mask, 1.0 / math.sqrt(size)))
        if head_mask is not None:
            probs = probs * head_mask
        context = paddle.bmm(probs.reshape([batch * heads, q_len, length]), value)
        context = kernels.permute(context.reshape([batch, heads, q_len, size]), [0, 2, 1, 3])
        return context.reshape([batch, q_len, heads * size]), (probs if output_attentions else None)
