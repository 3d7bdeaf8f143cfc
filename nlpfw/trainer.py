"""The training loop: length-bucketed batches, AdamW with per-component learning rates, linear
warm-up and decay, gradient clipping and accumulation, mixed precision (CUDA, and CPUs with
bf16 matrix units), evaluation every epoch, the best model kept by the task's main dev score
(`Evaluation.main`), and early stopping on it. Training callbacks (`nlpfw.interfaces.Callback`,
a recipe's `[[callbacks]]`) act at each point of the loop: start, each batch (also between the
backward pass and the optimizer step), each step, each evaluation, end.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
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

from nlpfw import checkpoint, signals
from nlpfw.corpus import EncodedSplit
from nlpfw.distributed import SINGLE, Context
from nlpfw.device import autocast, keep_freed_memory, set_cpu_threads, synchronize
from nlpfw.dropout import use_fast_dropout
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Callback, Task
from nlpfw.model import Model, evaluate_split, main_score
from nlpfw.recipe import TrainerConfig
from nlpfw.report import metric_title
from nlpfw.sampler import LengthBucketSampler, padding_fraction


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def better(record: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether an evaluation record's main score beats the best one's (ties keep the earlier)."""
    _, value, higher = main_score(record)
    _, best_value, _ = main_score(best)
    return value > best_value if higher else value < best_value


class SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.2f} steps/s" if task.speed else "- steps/s", style="cyan")


class Interrupted(Exception):
    """Ctrl-C during training; a checkpoint was written."""

    def __init__(self, run_dir: Path, position: checkpoint.Position):
        super().__init__(f"interrupted at epoch {position.epoch}, batch {position.batch}")
        self.run_dir = run_dir
        self.position = position


class _StopOnInterrupt:
    """While training, the first Ctrl-C asks to stop at the next optimizer step (where a
    checkpoint is exact); a second one stops at once."""

    pending = False  # a Ctrl-C came while an epoch was being evaluated

    def __init__(self, console: Console):
        self.console = console
        self.requested = False

    def __enter__(self) -> _StopOnInterrupt:
        _StopOnInterrupt.pending = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # SIGTERM and SIGHUP as Ctrl-C
            self.previous = {number: signal.signal(number, self._handle) for number in signals.STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        signals.note(signum)
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.console.print(f"[yellow]Stopping after this step[/] to save a checkpoint ({again} again to quit at once)")
        self.requested = True
        signals.install()  # a second signal stops at once
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        for number, previous in self.previous.items():
            if previous is not None:
                signal.signal(number, previous)
        _StopOnInterrupt.pending = self.requested


class NonFiniteLoss(NlpfwError):
    """The training loss became NaN or infinite."""


class OutOfMemory(NlpfwError):
    """A batch did not fit in the device's memory."""


@contextmanager
def out_of_memory(
    batch: dict[str, torch.Tensor] | None, key: str, size: int, epoch: int, index: int | None = None
) -> Iterator[None]:
    """Turn the device running out of memory (CUDA, MPS or the CPU allocator) into an
    `OutOfMemory` that names the batch and the recipe key to lower."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not isinstance(error, torch.OutOfMemoryError) and "out of memory" not in str(error).lower() and (
            "can't allocate memory" not in str(error)
        ):
            raise
        where = f"batch {index} of epoch {epoch}" if index is not None else f"evaluating epoch {epoch}"
        shape = f", {tuple(batch['input_ids'].shape)} [texts, characters]" if batch else ""
        smaller = max(size // 2, 1)
        raise OutOfMemory(
            f"out of memory at {where} ({key} = {size}{shape}): {str(error).splitlines()[0]}. "
            f"Set a smaller batch, e.g. --set {key}={smaller}"
            + (" (with trainer.grad_accum_steps doubled to keep the effective batch)" if index is not None else "")
            + ", or a shorter trainer.window"
        ) from None


@dataclass
class History:
    """What `fit` leaves behind: one record per evaluation, and the best one."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stopped_early: bool = False


@dataclass
class TrainBatch:
    """The batch being trained, as callbacks see it (`Callback.after_backward`)."""

    trainer: Trainer
    inputs: dict[str, torch.Tensor]
    index: int  # in the epoch, from 0
    boundary: bool  # the optimizer steps after this batch (the last of an accumulation)
    loss: torch.Tensor | None = None  # the batch's loss, once its forward pass ran
    synced: bool = False  # its gradients were averaged over the ranks

    def forward_backward(self, last: bool = False) -> torch.Tensor:
        """One more forward and backward pass over the batch, exactly as the trainer runs its own
        (mixed precision, loss scaling, the share of an accumulated or distributed batch): the
        gradients add to the parameters'. `last`: the callback's last pass on this batch, the
        one whose backward averages the gradients over the ranks on a stepping batch."""
        sync = last and self.boundary
        loss = self.trainer._forward(self.inputs, sync)
        self.trainer._backward(loss, self.index, sync)
        self.synced = self.synced or sync
        return loss.detach()


class Trainer:
    def __init__(
        self,
        model: Model,
        task: Task,
        config: TrainerConfig,
        device: torch.device,
        amp: torch.dtype | None,
        console: Console,
        context: Context = SINGLE,
        callbacks: Sequence[Callback] = (),
    ):
        self.model = model
        self.callbacks = list(callbacks)
        self.extra_passes = any(callback.extra_passes for callback in self.callbacks)
        self.context = context
        self.task = task
        self.config = config
        self.device = device
        self.amp = amp
        # On a CPU, bf16 speeds up training; evaluation stays in float32, as `nlpfw.load` predicts,
        # so a loaded model reproduces the scores the run reported.
        self.eval_amp = None if device.type == "cpu" else amp
        self.console = console
        if device.type == "cpu":
            set_cpu_threads()
            keep_freed_memory()
            if config.fast_dropout:
                use_fast_dropout(model)
        if config.compile:
            model.encoder.compile(dynamic=True)  # in place: parameter names (and checkpoints) unchanged
        # Training steps run through `ddp` (DDP averages the ranks' gradients); everything else
        # (decoding, saving, the decoder's own attributes) uses `model`, never the wrapper.
        self.ddp: torch.nn.Module = model
        if context.active:
            self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def fit(
        self,
        train: EncodedSplit,
        dev: EncodedSplit,
        on_epoch: Callable[[History], None],
        run_dir: Path | None = None,
        resume: checkpoint.Checkpoint | None = None,
    ) -> History:
        """Train; after each epoch evaluate on dev and call `on_epoch(history)`.

        The newest record is `history.epochs[-1]`; its `best` is true when it is the new best.
        With `run_dir`, checkpoints are written there every `checkpoint_every` steps, at each
        epoch end and on Ctrl-C; `resume` continues from one exactly where it stopped.
        """
        cfg, context = self.config, self.context
        set_seed(cfg.seed + context.rank)  # each rank its own dropout; the weights come from rank 0
        self.run_dir = run_dir
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.sampler = LengthBucketSampler(
            train.window_length, cfg.batch_size, self.generator, cfg.bucket_batches, cfg.grad_accum_steps,
            num_replicas=context.world, rank=context.rank,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(
            train, batch_sampler=self.sampler, generator=self.generator, collate_fn=self.task.collate
        )
        self._report_padding(train)
        steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum_steps)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        self.optimizer = torch.optim.AdamW(
            self.model.param_groups(cfg.lr, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_epsilon,
            fused=self.device.type in ("cpu", "cuda", "mps"),  # one kernel for all parameters: 4x faster on a CPU
        )  # fmt: skip
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg.warmup_ratio * total_steps), total_steps
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.history = History()
        self.position = checkpoint.Position()
        if resume is not None:
            self._restore(resume)
        for callback in self.callbacks:
            callback.on_train_start(self)
        try:
            return self._fit(loader, train, dev, on_epoch)
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self, self.history)

    def _fit(
        self,
        loader: torch.utils.data.DataLoader,
        train: EncodedSplit,
        dev: EncodedSplit,
        on_epoch: Callable[[History], None],
    ) -> History:
        cfg, history, position = self.config, self.history, self.position
        while position.epoch <= cfg.epochs:
            epoch = position.epoch
            if position.batch == 0:
                self.epoch_start_rng = self.generator.get_state()
            steps_before = position.step - position.batch // cfg.grad_accum_steps
            batches = len(loader)
            if cfg.max_steps is not None:
                batches = min(batches, (cfg.max_steps - steps_before) * cfg.grad_accum_steps)
            synchronize(self.device)
            start = time.perf_counter()
            train_loss = self._train_epoch(loader, batches, f"epoch {epoch}/{cfg.epochs}")
            synchronize(self.device)
            train_time = time.perf_counter() - start
            with ExitStack() as weights:  # e.g. a moving average: evaluated and saved as the model
                for callback in self.callbacks:
                    weights.enter_context(callback.evaluation_weights(self))
                record = self.evaluate(dev)
                record.update(epoch=epoch, step=position.step, train_loss=train_loss, lr=self.scheduler.get_last_lr()[0])
                record["padding"] = padding_fraction(train.window_length, self.sampler.batches[:batches])
                record["speed"].update(train_step_time=train_time / max(batches, 1), train_epoch_time=train_time)
                improved = history.best is None or better(record, history.best)
                record["best"] = improved
                history.epochs.append(record)
                if improved:
                    history.best, position.stale = record, 0
                else:
                    position.stale += 1
                for callback in self.callbacks:
                    callback.on_evaluate(self, record)
                on_epoch(history)
            position.epoch, position.batch, position.epoch_loss = epoch + 1, 0, 0.0
            self.epoch_start_rng = self.generator.get_state()
            self._checkpoint()
            if self._agree(_StopOnInterrupt.pending):
                raise Interrupted(self.run_dir, position)
            if cfg.max_steps is not None and position.step >= cfg.max_steps:
                break
            if cfg.patience is not None and position.stale >= cfg.patience:
                history.stopped_early = True
                name, value, _ = main_score(history.best)
                self.console.print(
                    f"[yellow]Early stop:[/] no better dev {metric_title(name)} in {position.stale} evaluations "
                    f"(best {value:.4f} at epoch {history.best['epoch']})"
                )
                break
        return history

    def _report_padding(self, train: EncodedSplit) -> None:
        """Say how much of the batches is padding, with length buckets and with plain shuffling."""
        cfg = self.config
        plans = {}
        for name, bucket_batches in (("ours", cfg.bucket_batches), ("plain", 1)):
            sampler = LengthBucketSampler(train.window_length, cfg.batch_size, None, bucket_batches, cfg.grad_accum_steps, cfg.seed)
            plans[name] = padding_fraction(train.window_length, list(sampler))
        self.console.print(
            f"Batches by length (buckets of {cfg.bucket_batches} batches): {plans['ours']:.1%} of the tokens "
            f"are padding; plain shuffled batches would pad {plans['plain']:.1%}"
        )

    def _train_epoch(self, loader: torch.utils.data.DataLoader, batches: int, description: str) -> float:
        """Train up to batch `batches` of the epoch, from `position.batch`; return the mean batch loss."""
        cfg, position = self.config, self.position
        self.model.train()
        if position.batch:
            self.generator.set_state(self.epoch_start_rng)  # the same shuffle as before the stop
        self.first_step = position.step - position.batch // cfg.grad_accum_steps  # steps before this epoch
        progress = self._progress()
        bar = progress.add_task(description, total=batches, loss="-", completed=position.batch)
        running = torch.full((), position.running, device=self.device)
        position.running = 0.0  # taken over by `running`; a resumed run's sum must not recur next epoch
        first_bad = torch.full((), -1, device=self.device)  # index of the first non-finite loss
        stop = False
        with progress, _StopOnInterrupt(self.console) as interrupt:
            for index, batch in enumerate(loader):
                if index >= batches:
                    break
                if index < position.batch:
                    continue  # trained before the stop
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                boundary = (index + 1) % cfg.grad_accum_steps == 0 or index + 1 == batches
                # gradients are averaged over the ranks only on the batch that steps, and with a
                # callback's extra passes, on its last one
                sync = boundary and not self.extra_passes
                step = TrainBatch(self, batch, index, boundary)
                with out_of_memory(batch, "trainer.batch_size", cfg.batch_size, self.position.epoch, index + 1):
                    for callback in self.callbacks:
                        callback.on_batch_start(self, step)
                    loss = self._forward(batch, sync)
                    step.loss = loss.detach()
                    if not self._skip(loss, index, first_bad):
                        self._backward(loss, index, sync)
                        step.synced = sync
                        running += loss.detach().float()
                        for callback in self.callbacks:
                            callback.after_backward(self, step)
                        if boundary and self.context.active and not step.synced:
                            raise RuntimeError("a callback with extra passes did not call batch.forward_backward(last=True)")
                position.seen += 1
                progress.advance(bar)
                if boundary:
                    self._step()
                    position.step += 1
                    position.batch = index + 1
                    for callback in self.callbacks:
                        callback.after_step(self)
                if position.seen == cfg.log_every or index + 1 == batches:
                    stop = self._read_out(running, first_bad, progress, bar, interrupt.requested)
                if not self.context.active:
                    stop = interrupt.requested  # in a distributed run, the ranks agree at read-outs
                if boundary and index + 1 < batches:
                    periodic = cfg.checkpoint_every is not None and position.step % cfg.checkpoint_every == 0
                    if periodic or stop:
                        self._check_finite(first_bad)
                        self._checkpoint(running)
                    if stop:
                        raise Interrupted(self.run_dir, position)
        self._check_finite(first_bad)
        return position.epoch_loss / max(batches, 1)

    def _skip(self, loss: torch.Tensor, index: int, first_bad: torch.Tensor) -> bool:
        """Note a NaN or infinite loss; under on_nan = "skip", say whether to leave the batch out."""
        if self.config.on_nan == "skip":  # needs the value now: one sync per batch
            bad = (~torch.isfinite(loss.detach())).float()
            if not self.context.all_reduce(bad).item():  # every rank skips, or none
                return False
            self.console.print(
                f"[yellow]Skipped[/] batch {index + 1} of epoch {self.position.epoch}: the loss is {loss.item()}"
            )
            return True
        first_bad.copy_(torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), index, first_bad))
        return False

    def _forward(self, batch: dict[str, torch.Tensor], sync: bool) -> torch.Tensor:
        """The batch's training loss, in mixed precision; `sync`: DDP will average this pass's
        gradients over the ranks."""
        with self._no_sync(not sync), autocast(self.device, self.amp):
            return self.ddp(batch)

    def _backward(self, loss: torch.Tensor, index: int, sync: bool) -> None:
        """Back-propagate batch `index`'s share of `loss` (`_share`), scaled for fp16."""
        with self._no_sync(not sync):
            self.scaler.scale(self._share(loss, index)).backward()

    def _share(self, loss: torch.Tensor, index: int) -> torch.Tensor:
        """The loss to back-propagate: its share of an accumulated batch and, in a distributed
        run, weighed by the size of this rank's part of the batch."""
        scaled = loss / self.config.grad_accum_steps
        if self.context.active:
            scaled = scaled * self.sampler.weights[index]
        return scaled

    def _no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        """DDP's `no_sync` (keep gradients local) on the accumulated batches that do not step."""
        return self.ddp.no_sync() if skip and self.context.active else contextlib.nullcontext()

    def _agree(self, flag: bool) -> bool:
        """Whether any rank says `flag` (one process: `flag`)."""
        if not self.context.active:
            return flag
        return bool(self.context.all_reduce(torch.tensor([float(flag)], device=self.device), "max").item())

    def _first_bad(self, first_bad: torch.Tensor) -> int:
        """The first batch with a non-finite loss on any rank, or -1."""
        if not self.context.active:
            return int(first_bad.item())
        pending = torch.where(first_bad < 0, torch.iinfo(torch.int64).max, first_bad.long()).reshape(1)
        bad = int(self.context.all_reduce(pending, "min").item())
        return -1 if bad == torch.iinfo(torch.int64).max else bad

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        bad = self._first_bad(first_bad)
        if bad < 0:
            return
        kept = checkpoint.find(self.run_dir) if self.run_dir is not None else None
        step = self.first_step + bad // self.config.grad_accum_steps + 1
        raise NonFiniteLoss(
            f"the training loss became NaN or infinite at step {step} (epoch {self.position.epoch}, "
            f"batch {bad + 1}); the run stopped. "
            f"{f'The last good checkpoint, {kept}, is kept. ' if kept else ''}"
            'Lower the learning rate, or set trainer.on_nan = "skip" to leave such batches out.'
        )

    def _step(self) -> None:
        cfg = self.config
        self.scaler.unscale_(self.optimizer)
        for callback in self.callbacks:
            callback.before_step(self)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _read_out(
        self, running: torch.Tensor, first_bad: torch.Tensor, progress: Progress, bar: Any, interrupted: bool
    ) -> bool:
        """Move the running loss into the epoch's sum and show it: the loop's one host-device
        sync. In a distributed run the loss is the ranks' mean, and the ranks agree here on a
        non-finite loss and on Ctrl-C; return whether to stop."""
        position, context = self.position, self.context
        if context.active:  # any rank's bad batch (-1: none) and any rank's Ctrl-C
            flags = torch.stack([first_bad.to(running.dtype), torch.tensor(float(interrupted), device=self.device)])
            context.all_reduce(flags, "max")
            total = context.all_reduce(running.clone().reshape(1)) / context.world
            logged, bad_index, stop = total.item(), flags[0].item(), flags[1].item() > 0
        else:
            (logged, bad_index), stop = torch.stack([running, first_bad.to(running.dtype)]).tolist(), interrupted
        if bad_index >= 0:
            self._check_finite(first_bad)
        position.epoch_loss += logged
        progress.update(bar, loss=f"{logged / max(position.seen, 1):.4f}")
        running.zero_()
        position.seen = 0
        return stop

    def _snapshot(self, running: torch.Tensor | None = None) -> checkpoint.Checkpoint:
        """The training state now (between optimizer steps), ready to write."""
        position = checkpoint.Position(**vars(self.position))
        position.running = running.item() if running is not None and position.seen else 0.0
        return checkpoint.Checkpoint(
            position=position,
            rng=checkpoint.RandomState.capture(self.epoch_start_rng),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            history=asdict(self.history),
            callbacks=[callback.state_dict() for callback in self.callbacks],
        )

    def _checkpoint(self, running: torch.Tensor | None = None) -> None:
        """Write the training state now; rank 0 alone, since the ranks' models are identical."""
        if self.run_dir is not None and self.context.main:
            checkpoint.save(self.run_dir, self.model, self._snapshot(running))

    def _restore(self, saved: checkpoint.Checkpoint) -> None:
        checkpoint.load_weights(self.model, saved)
        self.optimizer.load_state_dict(saved.optimizer)
        self.scheduler.load_state_dict(saved.scheduler)
        self.scaler.load_state_dict(saved.scaler)
        self.history = History(**saved.history)
        states = saved.callbacks or [{} for _ in self.callbacks]
        if len(states) != len(self.callbacks):
            raise checkpoint.CheckpointError(
                f"the checkpoint holds the state of {len(states)} callbacks, the recipe has {len(self.callbacks)}: "
                "resume with the run's own recipe.toml"
            )
        for callback, state in zip(self.callbacks, states):
            callback.load_state_dict(state)
        self.position = saved.position
        self.epoch_start_rng = saved.rng.loader
        self.generator.set_state(saved.rng.loader)
        saved.rng.restore()  # rank 0's; the other ranks draw their dropout from their own seeds
        if self.context.rank:
            torch.manual_seed(self.config.seed + self.context.rank + self.position.step)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), SpeedColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
        )  # fmt: skip

    def evaluate(self, dev: EncodedSplit) -> dict[str, Any]:
        """Dev loss, the task's scores and valid timings, scored on the whole original texts."""
        size = self.config.eval_batch_size
        with out_of_memory(None, "trainer.eval_batch_size", size, self.position.epoch):
            return evaluate_split(self.model, self.task, dev, size, self.device, self.eval_amp, self.context)
