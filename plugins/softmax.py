"""`softmax.v1`: a linear classifier with a per-character softmax.

The loss is cross-entropy over the characters inside the mask, or focal loss, with label
smoothing and class weights (`nlpfw_plugins.losses`, the options `classifier.v1` has too).

Decoding takes each character's most probable tag; with `constrained = true`, the most
probable sequence of valid tags instead (BIO or BIOES, read from the tag names: a Viterbi pass
over the log-probabilities, with only the forbidden moves scored).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Decoder
from nlpfw_plugins.crf import CONSTRAINED, TagConstraints, best_paths
from nlpfw_plugins.losses import Loss, LossConfig


class SoftmaxConfig(LossConfig):
    constrained: bool = CONSTRAINED


class SoftmaxDecoder(Decoder):
    config_model = SoftmaxConfig
    config: SoftmaxConfig

    targets = ("tags",)
    output_name = "tags"

    def __init__(self, config: SoftmaxConfig, input_dim: int, labels: Sequence[str], target: str = "tags"):
        super().__init__(config, input_dim, labels, target)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(input_dim, self.num_labels)
        self.constraints = TagConstraints(self.labels) if config.constrained else None
        self.criterion = Loss(config, self.labels)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden)).float()

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden)
        return self.criterion.single(logits[mask], tags[mask])

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(hidden)
        if self.constraints is None:
            return logits.argmax(dim=-1) * mask
        zeros = logits.new_zeros(self.num_labels)
        start, transitions, end = self.constraints.mask_scores(zeros, logits.new_zeros(self.num_labels, self.num_labels), zeros)
        return best_paths(start, transitions, end, logits.log_softmax(dim=-1), mask.bool())

    def marginals(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each character's tag probabilities [batch, chars, tags] (the softmax; 0 outside `mask`).
        With `constrained`, still the per-character softmax: decoding picks the best valid
        sequence from these, and a tag it picks may not be the most probable one."""
        return self.logits(hidden).softmax(dim=-1) * mask.unsqueeze(2)

    def confidence(self, hidden: torch.Tensor, mask: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """The probability of each tag `decode` chose (`tags` [batch, chars]) by `marginals`:
        [batch, chars], 0 outside `mask` (for `nlpfw predict --rank uncertainty`)."""
        return self.marginals(hidden, mask).gather(2, tags.long().unsqueeze(2)).squeeze(2)


@hookimpl
def register_decoders(register):
    register("softmax.v1", SoftmaxDecoder)
