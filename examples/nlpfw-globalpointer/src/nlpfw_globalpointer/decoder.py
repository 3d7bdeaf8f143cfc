"""`global_pointer.v1`: Efficient GlobalPointer, a span decoder (Su Jianlin, 2021-2022).

Every span `text[start:end]` of every entity type gets one score; a span is an entity when its
score is above `threshold` (0). Spans are scored as

    s_t(i, j) = q_i . k_j / sqrt(d) + w_t . [q_i; k_i] / 2 + v_t . [q_j; k_j] / 2

where `q` and `k` are the two halves (interleaved) of one shared projection of the encoder's
output, rotated by rotary position encoding (RoPE) so that `q_i . k_j` depends on the distance
j - i; the per-type terms are the "efficient" part: one small projection instead of a q/k pair
per type. Spans with i > j and padding score -1e12.

The loss is the multilabel categorical cross-entropy of "将“softmax+交叉熵”推广到多标签分类问题"
(kexue.fm/archives/7359), over all spans of each (window, type) pair:

    log(1 + sum_{neg} e^{s}) + log(1 + sum_{pos} e^{-s})

so each type's positives are pushed above 0 and its negatives below 0, with no class
imbalance weighting to tune. Nested and overlapping gold spans are all learnt: the decoder's
`target` is "spans", so the task hands it every gold span, not flat tags.

Scores and the loss run in float32 under mixed precision: the -1e12 mask does not fit in half
precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

import torch
from pydantic import Field
from torch import nn

from nlpfw.interfaces import Decoder, DecoderConfig, split_rows

NEG = 1e12  # the score of impossible spans (padding, end before start): a "minus infinity" that stays finite


class GlobalPointerConfig(DecoderConfig):
    head_size: int = Field(default=64, ge=2, multiple_of=2, description="size of the span query/key vectors (even, for RoPE)")
    rope: bool = Field(default=True, description="rotary position encoding of the span queries and keys")
    threshold: float = Field(default=0.0, description="a span is predicted when its score is above this")


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position encoding of `x` [batch, chars, d] (d even), in the interleaved form of
    bert4keras's `SinusoidalPositionEmbedding(d, 'zero')` + `apply_rotary_position_embeddings`:
    pair (x[2i], x[2i+1]) at position p is rotated by the angle p * 10000^(-2i/d)."""
    length, dim = x.shape[-2], x.shape[-1]
    position = torch.arange(length, dtype=torch.float32, device=x.device)
    frequency = torch.pow(10000.0, -2 * torch.arange(dim // 2, dtype=torch.float32, device=x.device) / dim)
    angles = position[:, None] * frequency[None, :]  # [chars, d/2]
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + turned * sin


def multilabel_categorical_crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Per row of `y_pred` [rows, classes] (scores) and `y_true` (0/1 of the same shape):
    log(1 + sum over negatives of e^s) + log(1 + sum over positives of e^-s)."""
    y_pred = (1 - 2 * y_true) * y_pred  # positives' scores negated
    y_neg = y_pred - y_true * NEG
    y_pos = y_pred - (1 - y_true) * NEG
    # log(1 + sum e^x) = softplus(logsumexp(x)): the paper's appended zero score, without a copy
    return nn.functional.softplus(torch.logsumexp(y_neg, dim=-1)) + nn.functional.softplus(
        torch.logsumexp(y_pos, dim=-1)
    )


class GlobalPointerDecoder(Decoder):
    """Efficient GlobalPointer over the encoder's output: one score per (type, start, end)."""

    config_model = GlobalPointerConfig
    config: GlobalPointerConfig
    targets = ("spans",)
    output_name = "spans"
    exportable = False  # `decode` returns as many rows as spans score above the threshold

    def __init__(self, config: GlobalPointerConfig, input_dim: int, labels: Sequence[str], target: str = "spans"):
        super().__init__(config, input_dim, labels, target)
        self.types = self.num_labels  # a span decoder's labels are the entity types
        self.dropout = nn.Dropout(config.dropout)
        self.project = nn.Linear(input_dim, 2 * config.head_size)  # q and k, interleaved
        self.type_bias = nn.Linear(2 * config.head_size, 2 * self.num_labels)  # start and end terms per type

    def scores(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Span scores [batch, types, chars, chars] (start, end inclusive); -1e12 where the span
        is impossible (outside `mask`, or end before start)."""
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            x = self.project(self.dropout(hidden).float())
            q, k = x[..., ::2], x[..., 1::2]
            if self.config.rope:
                q, k = rotary(q), rotary(k)
            logits = torch.einsum("bmd,bnd->bmn", q, k) / math.sqrt(self.config.head_size)
            bias = self.type_bias(x).transpose(1, 2) / 2  # [batch, 2 * types, chars]
            logits = logits[:, None] + bias[:, ::2, None] + bias[:, 1::2, :, None]
            mask = mask.bool()
            length = mask.shape[1]
            upper = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu()
            valid = mask[:, None, :, None] & mask[:, None, None, :] & upper
            return logits.masked_fill(~valid, -NEG)

    def gold(self, spans: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The 0/1 target of the scores `like` from (row, start, end, type) rows, `end` exclusive."""
        target = torch.zeros_like(like)
        if len(spans):
            row, start, end, label = spans.long().unbind(1)
            target[row, label, start, end - 1] = 1.0
        return target

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean multilabel categorical cross-entropy over (window, type) pairs; `tags` holds the
        gold spans as (row, start, end, type) rows."""
        scores = self.scores(hidden, mask)
        target = self.gold(tags, scores)
        rows = scores.shape[0] * scores.shape[1]
        return multilabel_categorical_crossentropy(target.reshape(rows, -1), scores.reshape(rows, -1)).mean()

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Spans scoring above the threshold as (row, start, end, type) rows, `end` exclusive."""
        found = (self.scores(hidden, mask) > self.config.threshold).nonzero()  # (row, type, start, end)
        row, label, start, end = found.unbind(1)
        return torch.stack([row, start, end + 1, label], dim=1)

    def unbatch(self, output: torch.Tensor, lengths: Sequence[int]) -> list[np.ndarray]:
        """Each window's (start, end, type) rows."""
        return split_rows(output, len(lengths))
