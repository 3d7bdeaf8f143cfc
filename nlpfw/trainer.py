"""The training loop: AdamW with per-component learning rates, linear warm-up and decay,
gradient clipping and accumulation, mixed precision on CUDA, evaluation every epoch, the
best model kept by dev F1, and early stopping.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from transformers import get_linear_schedule_with_warmup

from nlpfw.corpus import EncodedSplit
from nlpfw.device import autocast, synchronize
from nlpfw.interfaces import Task
from nlpfw.model import TaggingModel, evaluate_split
from nlpfw.recipe import TrainerConfig


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.2f} steps/s" if task.speed else "- steps/s", style="cyan")


@dataclass
class History:
    """What `fit` leaves behind: one record per evaluation, and the best one."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stopped_early: bool = False


class Trainer:
    def __init__(
        self,
        model: TaggingModel,
        task: Task,
        config: TrainerConfig,
        device: torch.device,
        amp: torch.dtype | None,
        console: Console,
    ):
        self.model = model
        self.task = task
        self.config = config
        self.device = device
        self.amp = amp
        self.console = console

    def fit(self, train: EncodedSplit, dev: EncodedSplit, on_epoch: Callable[[History], None]) -> History:
        """Train; after each epoch evaluate on dev and call `on_epoch(history)`.

        The newest record is `history.epochs[-1]`; its `best` is true when it is the new best.
        """
        cfg = self.config
        set_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = torch.utils.data.DataLoader(
            train, batch_size=cfg.batch_size, shuffle=True, generator=generator, collate_fn=self.task.collate
        )
        steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum_steps)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        optimizer = torch.optim.AdamW(
            self.model.param_groups(cfg.lr, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_epsilon
        )
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        history = History()
        step, stale = 0, 0
        for epoch in range(1, cfg.epochs + 1):
            batches = len(loader)
            if cfg.max_steps is not None:
                batches = min(batches, (cfg.max_steps - step) * cfg.grad_accum_steps)
            synchronize(self.device)
            start = time.perf_counter()
            train_loss, steps = self._train_epoch(
                loader, batches, f"epoch {epoch}/{cfg.epochs}", optimizer, scheduler, scaler
            )
            step += steps
            synchronize(self.device)
            train_time = time.perf_counter() - start
            record = self.evaluate(dev)
            record.update(
                epoch=epoch,
                step=step,
                train_loss=train_loss,
                lr=scheduler.get_last_lr()[0],
            )
            record["speed"].update(
                train_step_time=train_time / max(batches, 1), train_epoch_time=train_time
            )
            f1 = record["scores"]["overall"]["f1"]
            improved = history.best is None or f1 > history.best["scores"]["overall"]["f1"]
            record["best"] = improved
            history.epochs.append(record)
            if improved:
                history.best, stale = record, 0
            else:
                stale += 1
            on_epoch(history)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
            if cfg.patience is not None and stale >= cfg.patience:
                history.stopped_early = True
                self.console.print(
                    f"[yellow]Early stop:[/] no better dev F1 in {stale} evaluations "
                    f"(best {history.best['scores']['overall']['f1']:.4f} at epoch {history.best['epoch']})"
                )
                break
        return history

    def _train_epoch(
        self,
        loader: torch.utils.data.DataLoader,
        batches: int,
        description: str,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ) -> tuple[float, int]:
        """Train on the first `batches` batches; return the mean batch loss and the optimizer steps."""
        cfg = self.config
        self.model.train()
        progress = self._progress()
        bar = progress.add_task(description, total=batches, loss="-")
        running = torch.zeros((), device=self.device)
        seen, total_loss, steps = 0, 0.0, 0
        with progress:
            for index, batch in enumerate(loader):
                if index >= batches:
                    break
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                with autocast(self.device, self.amp):
                    loss = self.model(batch)
                scaler.scale(loss / cfg.grad_accum_steps).backward()
                running += loss.detach().float()
                seen += 1
                if (index + 1) % cfg.grad_accum_steps == 0 or index + 1 == batches:
                    scaler.unscale_(optimizer)
                    if cfg.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    steps += 1
                if seen == cfg.log_every or index + 1 == batches:
                    # the only host-device sync in the loop, once every log_every batches
                    logged = running.item()
                    total_loss += logged
                    progress.update(bar, loss=f"{logged / seen:.4f}")
                    running.zero_()
                    seen = 0
                progress.advance(bar)
        return total_loss / max(batches, 1), steps

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), SpeedColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
        )  # fmt: skip

    def evaluate(self, dev: EncodedSplit) -> dict[str, Any]:
        """Dev loss, exact-span scores and valid timings, scored on the whole original texts."""
        return evaluate_split(self.model, self.task, dev, self.config.eval_batch_size, self.device, self.amp)
