"""Adversarial training on the input embeddings: `fgm.v1` (fast gradient method, Miyato et al.
2017) and `pgd.v1` (projected gradient descent, Madry et al. 2018), as training callbacks.

After a batch's own backward pass, the embedding matrices are moved along their gradient by a
small step, the batch runs forward and backward once more (its adversarial loss adds to the
gradients), and the embeddings are put back exactly (the saved original values, not a
subtraction). The step's direction comes from the gradient of this batch alone, also when
batches accumulate (the gradients added up before it are set aside first); under loss scaling
(fp16) the direction is the same, since it is normalised; a batch whose gradient is zero or not
finite is not perturbed but still runs its pass, so that distributed ranks stay in step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from nlpfw.errors import NlpfwError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Callback, Config


class AdversarialConfig(Config):
    epsilon: float = Field(default=1.0, gt=0, description="size of the perturbation (its L2 norm per matrix)")
    embeddings: Literal["auto"] | list[str] = Field(
        default="auto",
        description='the embedding matrices to perturb: "auto" (every embedding of the encoder but '
        "position and token-type ones: BERT's word_embeddings, the BiLSTM's character and bigram "
        "vectors) or a list of parameter-name parts, e.g. [\"word_embeddings\"]",
    )


def embedding_parameters(model: nn.Module, embeddings: Literal["auto"] | list[str], owner: str) -> dict[str, nn.Parameter]:
    """The encoder's embedding matrices to perturb, by parameter name."""
    encoder = model.encoder
    found = {f"encoder.{name}.weight": module.weight for name, module in encoder.named_modules() if isinstance(module, nn.Embedding)}
    if embeddings == "auto":
        chosen = {name: p for name, p in found.items() if "position" not in name and "token_type" not in name}
    else:
        chosen = {name: p for name, p in model.named_parameters() if any(part in name for part in embeddings)}
    chosen = {name: p for name, p in chosen.items() if p.requires_grad}
    if not chosen:
        raise NlpfwError(
            f"{owner}.embeddings: no trainable parameter matches {embeddings!r}; the encoder's embeddings: "
            f"{', '.join(found) or 'none'}"
        )
    return chosen


def unit_step(grad: torch.Tensor, size: float) -> torch.Tensor:
    """`size` along `grad` normalised (L2); zero where the norm is zero or not finite."""
    norm = torch.linalg.vector_norm(grad.float())
    usable = torch.isfinite(norm) & (norm > 0)
    return torch.where(usable, grad * (size / torch.where(usable, norm, 1.0)), torch.zeros_like(grad))


class _Adversarial(Callback):
    extra_passes = True
    name = ""

    def on_train_start(self, trainer: Any) -> None:
        self.params = embedding_parameters(trainer.model, self.config.embeddings, self.name)
        self.before: dict[str, torch.Tensor] = {}

    def on_batch_start(self, trainer: Any, batch: Any) -> None:
        # gradients accumulated from earlier batches, set aside to get this batch's own
        self.before = {name: p.grad.detach().clone() for name, p in self.params.items() if p.grad is not None}

    @torch.no_grad()
    def put_back(self, saved: dict[str, torch.Tensor]) -> None:
        """The embeddings exactly as they were before the attack; the batch is done."""
        for name, param in self.params.items():
            param.copy_(saved[name])
        self.before = {}

    def batch_gradient(self, name: str, param: nn.Parameter) -> torch.Tensor:
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        before = self.before.get(name)
        return grad if before is None else grad - before


class FGM(_Adversarial):
    """One adversarial pass per batch: embeddings + epsilon * g / ||g||."""

    config_model = AdversarialConfig
    name = "fgm.v1"

    def after_backward(self, trainer: Any, batch: Any) -> None:
        saved = {}
        with torch.no_grad():
            for name, param in self.params.items():
                saved[name] = param.detach().clone()
                param.add_(unit_step(self.batch_gradient(name, param), self.config.epsilon))
        try:
            batch.forward_backward(last=True)
        finally:
            self.put_back(saved)


class PGDConfig(AdversarialConfig):
    epsilon: float = Field(default=1.0, gt=0, description="radius of the ball the perturbation stays in (L2 per matrix)")
    alpha: float = Field(default=0.3, gt=0, description="size of each step")
    steps: int = Field(default=3, ge=1, description="attack steps K: K extra forward and backward passes per batch")


class PGD(_Adversarial):
    """K steps of size alpha along the normalised gradient, each projected back into the
    epsilon ball around the original embeddings; the gradients of the first K-1 passes only
    steer the attack, the last pass's add to the batch's."""

    config_model = PGDConfig
    config: PGDConfig
    name = "pgd.v1"

    def after_backward(self, trainer: Any, batch: Any) -> None:
        model, steps = trainer.model, self.config.steps
        kept = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        saved = {name: param.detach().clone() for name, param in self.params.items()}
        try:
            for step in range(steps):
                with torch.no_grad():
                    for name, param in self.params.items():
                        grad = self.batch_gradient(name, param) if step == 0 else param.grad
                        if grad is None:
                            grad = torch.zeros_like(param)
                        param.add_(unit_step(grad, self.config.alpha))
                        delta = param - saved[name]
                        param.copy_(saved[name] + delta * _shrink(delta, self.config.epsilon))
                last = step == steps - 1
                if last:  # the batch's gradients back, the last pass adds to them
                    for name, p in model.named_parameters():
                        p.grad = kept[name].clone() if name in kept else None
                else:
                    model.zero_grad(set_to_none=False)
                batch.forward_backward(last=last)
        finally:
            self.put_back(saved)


def _shrink(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """The factor that projects `delta` onto the L2 ball of `radius` (1 inside it)."""
    norm = torch.linalg.vector_norm(delta.float())
    return torch.where(norm > radius, radius / norm, torch.ones_like(norm))


@hookimpl
def register_callbacks(register):
    register("fgm.v1", FGM)
    register("pgd.v1", PGD)
