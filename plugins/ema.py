"""`ema.v1`: an exponential moving average of the weights, evaluated and saved as the model.

After every optimizer step, `average = decay * average + (1 - decay) * weights`, in float32.
Each evaluation (and so the best model saved in `model/`) uses the average; training goes on
with the weights themselves, which are put back exactly after the evaluation. With `warmup`,
the decay grows as min(decay, (1 + n) / (10 + n)) over the first updates n, as TensorFlow's
ExponentialMovingAverage does, so that the early average is not dominated by the
initialisation. The average is saved with each checkpoint, so a resumed run continues it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pydantic import Field

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Callback, Config


class EMAConfig(Config):
    decay: float = Field(default=0.999, gt=0, lt=1, description="weight of the average so far at each step")
    warmup: bool = Field(default=True, description="a smaller decay over the first steps: min(decay, (1 + n) / (10 + n))")


class EMA(Callback):
    config_model = EMAConfig
    config: EMAConfig

    def __init__(self, config: EMAConfig):
        super().__init__(config)
        self.average: dict[str, torch.Tensor] = {}
        self.updates = 0

    def on_train_start(self, trainer: Any) -> None:
        self.params = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
        if not self.average:  # a resumed run brought its average back
            self.average = {name: p.detach().float().clone() for name, p in self.params.items()}
        else:
            self.average = {name: value.to(self.params[name].device) for name, value in self.average.items()}

    def decay(self) -> float:
        if self.config.warmup:
            return min(self.config.decay, (1 + self.updates) / (10 + self.updates))
        return self.config.decay

    @torch.no_grad()
    def after_step(self, trainer: Any) -> None:
        weight = 1.0 - self.decay()
        names = list(self.params)
        averages = [self.average[name] for name in names]
        torch._foreach_lerp_(averages, [self.params[name].detach().float() for name in names], weight)
        self.updates += 1

    @contextmanager
    def evaluation_weights(self, trainer: Any) -> Iterator[None]:
        with torch.no_grad():
            kept = {name: p.detach().clone() for name, p in self.params.items()}
            for name, p in self.params.items():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(kept[name])

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "average": {name: value.cpu() for name, value in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.average = dict(state["average"])


@hookimpl
def register_callbacks(register):
    register("ema.v1", EMA)
