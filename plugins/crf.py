"""`crf.v1`: a linear classifier and a linear-chain CRF (pytorch-crf) over the encoder.

The CRF runs in float32 even under mixed precision: its forward algorithm sums many
log-probabilities and loses too much in half precision.
"""

from __future__ import annotations

import torch
from torch import nn
from torchcrf import CRF

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder, DecoderConfig


class CrfConfig(DecoderConfig):
    pass


class CrfDecoder(Decoder):
    config_model = CrfConfig

    def __init__(self, config: CrfConfig, input_dim: int, num_tags: int):
        super().__init__(config, input_dim, num_tags)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(input_dim, num_tags)
        self.crf = CRF(num_tags, batch_first=True)

    def emissions(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden)).float()

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emissions = self.emissions(hidden)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return -self.crf(emissions, tags, mask=mask, reduction="mean")

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emissions = self.emissions(hidden)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            paths = self.crf.decode(emissions, mask=mask)
        out = torch.zeros(mask.shape, dtype=torch.long)
        for row, path in enumerate(paths):
            out[row, : len(path)] = torch.tensor(path, dtype=torch.long)
        return out.to(mask.device)


@hookimpl
def register_decoders(register):
    register("crf.v1", CrfDecoder)
