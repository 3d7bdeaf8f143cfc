"""The training loss of the classifying decoders (`softmax.v1` over tags, `classifier.v1` over
classes): one set of options, the same names and meanings on both.

`loss = "cross_entropy"` (the default) or `"focal"`, focal loss (Lin et al. 2017):
`-(1 - p_t)^gamma * log p_t`, which turns down the loss of what the model already gets right,
so the rare labels count for more. `focal_gamma = 0` is cross-entropy exactly.

`label_smoothing` (cross-entropy only) is torch's: the gold is `1 - eps` on the right label
plus `eps / n` spread over all `n` labels. `class_weights` weigh each gold label's loss, and
the batch's loss is the weighted mean, as torch's `cross_entropy(weight=...)` takes it; under
focal loss a class weight is the per-class alpha of the multi-class focal loss.

Multi-label classification (one sigmoid per class, binary cross-entropy) takes the same
options: focal loss as torchvision's `sigmoid_focal_loss` (with `focal_alpha`, the weight of
the positives against `1 - focal_alpha` for the negatives), label smoothing as Keras's binary
cross-entropy (`y * (1 - eps) + eps / 2`), and class weights on each class's column.

Positions outside the mask never reach the loss: the tag decoder passes only the characters
inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from nlpfw.interfaces import DecoderConfig

LossName = Literal["cross_entropy", "focal"]
PREFIXES = ("B", "I", "E", "S")
TINY = 1e-12  # tag prefixes, for a class weight given per entity type


class LossConfig(DecoderConfig):
    """Options of a decoder whose loss is a (soft)max over labels; declare them before its own."""

    loss: LossName = Field(
        default="cross_entropy", description='"cross_entropy", or "focal" (focal loss, down-weighting easy labels)'
    )
    focal_gamma: float = Field(
        default=2.0, ge=0, description='focal loss: the focusing exponent (0: cross-entropy); only with loss = "focal"'
    )
    focal_alpha: float | None = Field(
        default=None, gt=0, lt=1,
        description='focal loss, multi-label only: the weight of the positives (negatives: 1 - alpha); '
        'only with loss = "focal"; per-class alpha for single-label: class_weights',
    )  # fmt: skip
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=1, description="cross-entropy only: the share of the gold spread over every label"
    )
    class_weights: dict[str, float] | None = Field(
        default=None, description="loss weight per label name (others 1.0), e.g. for imbalanced labels"
    )

    @field_validator("focal_gamma", "focal_alpha")
    @classmethod
    def _only_with_focal(cls, value: float | None, info: ValidationInfo) -> float | None:
        # the default is let through: a run's resolved recipe writes every option down
        default = cls.model_fields[info.field_name or ""].default
        if info.data.get("loss", "focal") != "focal" and value != default:
            raise ValueError(f'only used with loss = "focal" (loss is "{info.data["loss"]}")')
        return value

    @field_validator("label_smoothing")
    @classmethod
    def _not_with_focal(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("loss") == "focal":
            raise ValueError('only with loss = "cross_entropy" (focal loss takes no label smoothing)')
        return value

    @field_validator("class_weights")
    @classmethod
    def _positive(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, weight in (value or {}).items():
            if not weight > 0:
                raise ValueError(f"the weight of {name!r} must be positive, not {weight}")
        return value


def class_weights(weights: dict[str, float] | None, labels: Sequence[str]) -> list[float] | None:
    """Each label's weight (1.0 when not given), or None when no weights are given.

    A key is a label name or, for tag labels (`B-X`, `I-X`, `E-X`, `S-X`), an entity type,
    which weighs all of that type's tags; a label named exactly wins over its type. A key
    that is neither is an error naming it."""
    if weights is None:
        return None
    by_type: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        prefix, dash, kind = label.partition("-")
        if dash and prefix in PREFIXES and kind:
            by_type.setdefault(kind, []).append(i)
    unknown = sorted(k for k in weights if k not in labels and k not in by_type)
    if unknown:
        names = ", ".join(labels) + (f" (or an entity type: {', '.join(by_type)})" if by_type else "")
        raise ValueError(f"decoder.class_weights: unknown labels {unknown}; labels: {names}")
    vector = [1.0] * len(labels)
    for key, weight in weights.items():
        if key not in labels:
            for i in by_type[key]:
                vector[i] = float(weight)
    for i, label in enumerate(labels):
        if label in weights:
            vector[i] = float(weights[label])
    return vector


class Loss(nn.Module):
    """The configured loss over `labels`: `single(logits [n, labels], gold ids [n])` for a softmax,
    `multi(logits [n, labels], gold 0/1 [n, labels])` for one sigmoid per label. The class
    weights are a buffer that is not saved (the recipe holds them)."""

    weight: torch.Tensor | None

    def __init__(self, config: LossConfig, labels: Sequence[str], multi_label: bool = False, always_weigh: bool = False):
        super().__init__()
        self.kind = config.loss
        self.gamma = config.focal_gamma
        self.alpha = config.focal_alpha
        self.smoothing = config.label_smoothing
        if self.alpha is not None and not multi_label:
            raise ValueError(
                "decoder.focal_alpha: a single alpha weighs positives against negatives, which only "
                "multi-label (sigmoid) classification has; for a per-class alpha set class_weights"
            )
        weights = class_weights(config.class_weights, labels)
        if weights is None and always_weigh:  # classifier.v1 always passed its (all-ones) weights
            weights = [1.0] * len(labels)
        self.register_buffer("weight", None if weights is None else torch.tensor(weights), persistent=False)

    def single(self, logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        if self.kind == "cross_entropy":
            return nn.functional.cross_entropy(logits, gold, weight=self.weight, label_smoothing=self.smoothing)
        return focal_loss(logits, gold, self.gamma, self.weight)

    def multi(self, logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        target = gold * (1 - self.smoothing) + self.smoothing / 2 if self.smoothing else gold
        losses = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.kind == "focal":
            p = logits.sigmoid()
            p_t = p * gold + (1 - p) * (1 - gold)
            losses = losses * (1 - p_t).clamp(min=TINY) ** self.gamma
            if self.alpha is not None:
                losses = losses * (self.alpha * gold + (1 - self.alpha) * (1 - gold))
        if self.weight is not None:
            losses = losses * self.weight
        return losses.mean()


def focal_loss(logits: torch.Tensor, gold: torch.Tensor, gamma: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class focal loss, `-w_y (1 - p_y)^gamma log p_y`, averaged as `cross_entropy`
    averages: over the rows, or by the sum of the rows' weights when `weight` is given. With
    `gamma = 0` it is cross-entropy."""
    log_p = logits.log_softmax(dim=-1).gather(1, gold.unsqueeze(1)).squeeze(1)
    # 1 - p as -expm1(log p) keeps its precision near p = 1; the clamp keeps the gradient of a
    # gamma below 1 finite where p rounds to 1
    losses = -((-log_p.expm1()).clamp(min=TINY) ** gamma) * log_p if gamma else -log_p
    if weight is None:
        return losses.mean()
    w = weight[gold]
    return (losses * w).sum() / w.sum()
