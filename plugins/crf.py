"""`crf.v1`: a linear classifier and a linear-chain CRF (pytorch-crf) over the encoder.

The CRF runs in float32 even under mixed precision: its forward algorithm sums many
log-probabilities and loses too much in half precision.

Decoding is a batched tensor Viterbi over pytorch-crf's learned parameters: it gives exactly
the paths `torchcrf.CRF.decode` gives, stays on the model's device, and exports to ONNX with
a dynamic sequence length (its two loops over time become `Scan` ops when exporting).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchcrf import CRF

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder, DecoderConfig

Step = Callable[[torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, torch.Tensor]]


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
            return viterbi(self.crf, emissions, mask.bool())


def viterbi(crf: CRF, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Best tag ids [batch, chars] (0 outside `mask`) of `emissions` [batch, chars, tags] under
    `crf`'s parameters; `mask` [batch, chars] is left-aligned and every row starts on.

    Scores are computed by pytorch-crf's own operations in its order, so paths and ties come out
    identical. Both loops take all `chars` steps, never none (ONNX Runtime's `Scan` rejects an
    empty sequence): the forward loop's first step is masked off, as padding is."""
    emissions, mask = emissions.transpose(0, 1), mask.T  # time first, as pytorch-crf works
    steps = torch.arange(mask.shape[0], device=mask.device)
    on = mask & (steps > 0).unsqueeze(1)
    transitions = crf.transitions

    def forward(score: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        emission, on = xs  # [batch, tags], [batch]
        next_score, indices = (score.unsqueeze(2) + transitions + emission.unsqueeze(1)).max(dim=1)
        return torch.where(on.unsqueeze(1), next_score, score), indices

    # history[t]: for each tag at t, the best tag at t - 1 (history[0] is unused)
    score, history = _scan(forward, crf.start_transitions + emissions[0], (emissions, on))
    best_last = (score + crf.end_transitions).max(dim=1).indices  # [batch]
    # at and after its last position a row's path starts again from its best last tag
    after_end = (steps.unsqueeze(1) > mask.sum(dim=0) - 1).unsqueeze(2)  # [chars, batch, 1]
    history = torch.where(after_end, best_last.unsqueeze(1), history)

    def back(tag: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        (indices,) = xs  # the tag at t is `tag`; the best tag at t - 1 is read from history[t]
        return indices.gather(1, tag.unsqueeze(1)).squeeze(1), tag.clone()

    _, path = _scan(back, best_last.clone(), (history,), reverse=True)
    return path.T * mask.T


def _scan(
    step: Step, init: torch.Tensor, xs: tuple[torch.Tensor, ...], reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """`step(carry, x) -> (carry, out)` over dim 0 of `xs`: the last carry and the outs, stacked.

    When exporting it is `torch.scan`, an ONNX `Scan` over the dynamic length; otherwise a Python
    loop (in eager mode `torch.scan` compiles its step on every new shape)."""
    if torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        return scan(step, init, xs, reverse=reverse)
    carry, outs = init, []
    steps = list(zip(*(x.unbind(0) for x in xs)))
    for x in reversed(steps) if reverse else steps:
        carry, out = step(carry, x)
        outs.append(out)
    if reverse:
        outs.reverse()
    return carry, torch.stack(outs)


@hookimpl
def register_decoders(register):
    register("crf.v1", CrfDecoder)
