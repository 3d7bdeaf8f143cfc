"""A test plugin of faulty decoders: `nan_crf.v1`, whose 7th training batch has a NaN loss, and
`oom_crf.v1`, whose 3rd training batch runs out of memory."""

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


class OomCrfDecoder(CrfDecoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = 0

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches += 1
            if self.batches == 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().loss(hidden, tags, mask)


@hookimpl
def register_decoders(register):
    register("nan_crf.v1", NanCrfDecoder)
    register("oom_crf.v1", OomCrfDecoder)
