"""`softmax.v1`: a linear classifier with a per-character softmax (cross-entropy loss)."""

from __future__ import annotations

import torch
from torch import nn

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder, DecoderConfig


class SoftmaxConfig(DecoderConfig):
    pass


class SoftmaxDecoder(Decoder):
    config_model = SoftmaxConfig

    def __init__(self, config: SoftmaxConfig, input_dim: int, num_tags: int):
        super().__init__(config, input_dim, num_tags)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(input_dim, num_tags)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden)).float()

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden)
        return nn.functional.cross_entropy(logits[mask], tags[mask])

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.logits(hidden).argmax(dim=-1) * mask


@hookimpl
def register_decoders(register):
    register("softmax.v1", SoftmaxDecoder)
