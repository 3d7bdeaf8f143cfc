"""The trained model: encoder + decoder, batched inference, and the self-contained model folder.

A model folder holds everything needed to predict without the training data:

    model.safetensors   all weights (encoder and decoder)
    encoder/            what the encoder needs to rebuild itself (tokenizer, architecture)
    labels.json         entity types and tag names, in id order
    recipe.toml         the resolved recipe it was trained with
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from nlpfw import io
from nlpfw.corpus import EncodedSplit, encode_split, window_settings
from nlpfw.device import autocast, synchronize
from nlpfw.distributed import SINGLE, Context
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import TARGETS, Decoder, Encoder, Example, Span, Task
from nlpfw.metrics import score_spans
from nlpfw.recipe import Recipe, load_recipe
from nlpfw.registry import Registry

WEIGHTS = "model.safetensors"


class TaggingModel(nn.Module):
    """An encoder and a decoder trained together.

    The decoder's loss reads the batch's column named by its `target` (`tags` or `spans`),
    so tag decoders and span decoders train through the same loop."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a batch."""
        hidden = self.encoder(batch["input_ids"], batch["mask"])
        return self.decoder.loss(hidden, batch[self.decoder.target], batch["mask"])

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(loss if the batch has gold targets, else None; the decoder's output), from one
        encoder pass."""
        hidden = self.encoder(batch["input_ids"], batch["mask"])
        target = self.decoder.target
        loss = self.decoder.loss(hidden, batch[target], batch["mask"]) if target in batch else None
        return loss, self.decoder.decode(hidden, batch["mask"])

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: each component at its own learning rate; no decay on biases and norms."""
        groups = []
        for module in (self.encoder, self.decoder):
            module_lr = getattr(module.config, "lr", None) or lr
            decay, no_decay = [], []
            for name, param in module.named_parameters():
                if param.requires_grad:
                    (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
            groups += [
                {"params": decay, "lr": module_lr, "weight_decay": weight_decay},
                {"params": no_decay, "lr": module_lr, "weight_decay": 0.0},
            ]
        return [g for g in groups if g["params"]]


@torch.no_grad()
def infer(
    model: TaggingModel,
    task: Task,
    windows: Sequence[dict[str, Any]],
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    rows: np.ndarray | None = None,
) -> tuple[list[np.ndarray], float | None, int]:
    """The decoder's output for every window (in order), the mean loss per window over the
    batches with gold targets (the same however the windows are batched), and the batch count.
    Outputs are tag ids [chars] from a tag decoder, or (start, end, label id) rows [n, 3] from a
    span decoder.

    Windows are batched by length (longest first), so a batch pads only to its own longest.
    With `rows`, only those windows are tagged; the others get no tags.
    """
    model.eval()
    spans = model.decoder.target == "spans"
    lengths = np.asarray([len(w["input_ids"]) for w in windows])
    order = np.argsort(-lengths, kind="stable")
    if rows is not None:
        order = order[np.isin(order, rows)]
    empty = np.zeros((0, 3) if spans else 0, dtype=np.int64)
    outputs: list[np.ndarray] = [empty] * len(windows)
    losses, counted = [], 0
    batches = 0
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size].tolist()
        batch = {k: v.to(device) for k, v in task.collate([windows[i] for i in rows]).items()}
        with autocast(device, amp):
            loss, best = model.predict(batch)
        if loss is not None:  # a batch's mean over its windows
            losses.append(loss.detach().float() * len(rows))
            counted += len(rows)
        best = best.cpu().numpy()
        if spans:
            best = best[np.argsort(best[:, 0], kind="stable")]
            cuts = np.searchsorted(best[:, 0], np.arange(len(rows) + 1))
            for j, i in enumerate(rows):
                outputs[i] = best[cuts[j] : cuts[j + 1], 1:]
        else:
            for j, i in enumerate(rows):
                outputs[i] = best[j, : lengths[i]]
        batches += 1
    mean_loss = torch.stack(losses).sum().item() / counted if losses else None
    return outputs, mean_loss, batches


def predict_spans(
    model: TaggingModel,
    task: Task,
    split: EncodedSplit,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    context: Context = SINGLE,
) -> tuple[list[list[Span]], float | None, int]:
    """Entities of every text of `split` (windows merged), the mean loss, and the batch count.

    In a distributed run each rank tags the texts `rank, rank + world, ...` and every rank
    gets all texts' entities back: the same result as one process, in a `world`th of the time."""
    mine = np.flatnonzero(split.window_text % context.world == context.rank) if context.active else None
    outputs, loss, batches = infer(model, task, split, batch_size, device, amp, mine)
    examples = split.examples
    target = model.decoder.target
    window_spans = []
    for row, output in enumerate(outputs):
        start = int(split.window_start[row])
        text = examples[split.window_text[row]].text[start : start + int(split.window_length[row])]
        window_spans.append(task.output_spans(text, output, target))
    merged = split.merge(window_spans)
    if context.active:
        parts = context.gather((merged[context.rank :: context.world], loss, len(mine), batches))
        for rank, (spans, *_) in enumerate(parts):
            merged[rank :: context.world] = spans
        batches = sum(n for *_, n in parts)
        counted = [(mean, windows) for _, mean, windows, _ in parts if mean is not None]
        loss = sum(mean * n for mean, n in counted) / sum(n for _, n in counted) if counted else None
    return merged, loss, batches


def build_decoder(section: Any, encoder: Encoder, task: Task) -> Decoder:
    """The recipe's decoder (`section`: its validated recipe section) for `encoder` and `task`,
    over the label set of the decoder's target; an error if the task cannot give that target."""
    cls = section.component.cls
    target = getattr(cls, "target", "tags")
    if target not in TARGETS:
        raise NlpfwError(f"decoder.type: {section.type} has target {target!r}; a decoder's target is one of {', '.join(TARGETS)}")
    if target not in task.targets:
        raise NlpfwError(
            f"decoder.type: {section.type} learns from {target}, which task {type(task).__name__} "
            f"does not give (it gives {', '.join(task.targets)})"
        )
    return cls(section.config, encoder.output_dim, len(task.target_labels(target)))


def save_model(directory: Path, model: TaggingModel, task: Task, recipe: Recipe) -> None:
    """Write the model folder; every file is replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save(directory / "encoder")
    io.write_json(directory / "labels.json", {"entity_types": task.entity_types, "labels": task.labels})
    io.write_text(directory / "recipe.toml", recipe.to_toml())
    io.atomic_write(directory / WEIGHTS, lambda tmp: safetensors.torch.save_model(model, str(tmp)))


@dataclass
class LoadedModel:
    """A model folder loaded for prediction: `nlpfw.load(RUN_DIR)` returns one."""

    recipe: Recipe
    task: Task
    model: TaggingModel
    device: torch.device
    directory: Path | None = None

    def encode(self, examples: list[Example]) -> EncodedSplit:
        """Examples encoded and windowed exactly as in training."""
        window, stride = window_settings(
            self.recipe.trainer.window, self.recipe.trainer.stride, self.model.encoder.max_chars
        )
        return encode_split(examples, partial(self.task.encode, encoder=self.model.encoder), window, stride)

    def predict_spans(self, texts: Sequence[str], batch_size: int = 64) -> list[list[Span]]:
        """Entities of each text as `Span`s, in input order; offsets index the text exactly.

        Texts are batched by length and texts longer than the encoder's window are windowed,
        as in training."""
        spans, _, _ = predict_spans(self.model, self.task, self.encode([Example(t) for t in texts]), batch_size, self.device)
        return spans

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[list[dict[str, Any]]]:
        """Entities of each text, in input order: `{"type", "text", "start", "end"}` records
        whose `start`/`end` are character offsets into the text (`text[start:end]`)."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text in a list")
        return [entity_records(t, s) for t, s in zip(texts, self.predict_spans(texts, batch_size))]

    def evaluate(self, examples: list[Example], batch_size: int = 64) -> dict[str, Any]:
        """Scores on labelled examples, as a run's evaluation record (scores, loss, timings)."""
        return evaluate_split(self.model, self.task, self.encode(examples), batch_size, self.device)


def evaluate_split(
    model: TaggingModel,
    task: Task,
    split: EncodedSplit,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    context: Context = SINGLE,
) -> dict[str, Any]:
    """Loss, exact-span scores on the whole texts, and valid timings of one labelled split."""
    synchronize(device)
    start = time.perf_counter()
    predicted, loss, batches = predict_spans(model, task, split, batch_size, device, amp, context)
    synchronize(device)
    elapsed = time.perf_counter() - start
    scores = score_spans([e.spans or [] for e in split.examples], predicted, task.entity_types)
    return {
        "dev_loss": loss,
        "scores": scores.to_dict(),
        "scoring": getattr(task.config, "scoring", "strict"),
        "speed": {"valid_step_time": elapsed / max(batches, 1), "valid_epoch_time": elapsed},
    }


def entity_records(text: str, spans: Sequence[Span]) -> list[dict[str, Any]]:
    """JSON-ready entities of one text."""
    return [{"type": s.label, "text": text[s.start : s.end], "start": s.start, "end": s.end} for s in spans]


def load_model(directory: str | Path, registry: Registry, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model folder written by `save_model` (or the `model/` of a run folder); needs
    no training data and no network."""
    directory = Path(directory)
    if (directory / "model" / WEIGHTS).is_file():
        directory = directory / "model"
    if not (directory / WEIGHTS).is_file():
        raise NlpfwError(f"{directory}: not a run folder or a model folder (no {WEIGHTS} in it or in model/)")
    recipe = load_recipe(directory / "recipe.toml", registry)
    labels = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
    task = recipe.task.component.cls(recipe.task.config, labels["entity_types"])
    encoder = recipe.encoder.component.cls.from_saved(recipe.encoder.config, directory / "encoder")
    model = TaggingModel(encoder, build_decoder(recipe.decoder, encoder, task))
    safetensors.torch.load_model(model, str(directory / WEIGHTS), device="cpu")
    device = torch.device(device)
    model.to(device).eval()
    return LoadedModel(recipe, task, model, device, directory)
