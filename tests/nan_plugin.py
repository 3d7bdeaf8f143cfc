"""A test plugin: `nan_crf.v1`, the CRF decoder whose 7th training batch has a NaN loss."""

from __future__ import annotations

import torch

from nlpfw.hookspecs import hookimpl
from nlpfw_plugins.crf import CrfDecoder

BAD_BATCH = 7


class NanCrfDecoder(CrfDecoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = 0

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = super().loss(hidden, tags, mask)
        if self.training:
            self.batches += 1
            if self.batches == BAD_BATCH:
                return loss * float("nan")
        return loss


@hookimpl
def register_decoders(register):
    register("nan_crf.v1", NanCrfDecoder)
