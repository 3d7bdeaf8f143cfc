"""The trained model: encoder + decoder, batched inference, and the self-contained model folder.

A model folder holds everything needed to predict without the training data:

    model.safetensors   all weights (encoder and decoder)
    encoder/            what the encoder needs to rebuild itself (tokenizer, architecture)
    labels.json         the task's label inventory, and the decoder's target and its label names
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
from nlpfw.interfaces import Decoder, Encoder, Evaluation, Example, Task
from nlpfw.recipe import Recipe, load_recipe
from nlpfw.registry import Registry

WEIGHTS = "model.safetensors"


class Model(nn.Module):
    """An encoder and a decoder trained together.

    The decoder's loss reads the batch's column named by its `target`, so every task and
    decoder trains through the same loop."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        decoder.bind(encoder)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a batch."""
        hidden = self.encoder(batch["input_ids"], batch["mask"])
        return self.decoder.loss(hidden, batch[self.decoder.target], batch["mask"])

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(loss if the batch has gold targets, else None; the decoder's output), from one
        encoder pass."""
        hidden = self.encoder(batch["input_ids"], batch["mask"])
        gold = batch.get(self.decoder.target)
        loss = self.decoder.loss(hidden, gold, batch["mask"]) if gold is not None else None
        if self.decoder.reads_gold:
            return loss, self.decoder.decode(hidden, batch["mask"], gold)
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
    model: Model,
    task: Task,
    windows: Sequence[dict[str, Any]],
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    rows: np.ndarray | None = None,
) -> tuple[list[np.ndarray | None], float | None, int]:
    """The decoder's output for every window (in order, cut by `Decoder.unbatch`), the mean
    loss per window over the batches with gold targets (the same however the windows are
    batched), and the batch count.

    Windows are batched by length (longest first), so a batch pads only to its own longest.
    With `rows`, only those windows are run; the others' outputs are None.
    """
    model.eval()
    lengths = np.asarray([len(w["input_ids"]) for w in windows])
    order = np.argsort(-lengths, kind="stable")
    if rows is not None:
        order = order[np.isin(order, rows)]
    outputs: list[np.ndarray | None] = [None] * len(windows)
    losses, counted = [], 0
    batches = 0
    for begin in range(0, len(order), batch_size):
        chosen = order[begin : begin + batch_size].tolist()
        batch = {k: v.to(device) for k, v in task.collate([windows[i] for i in chosen]).items()}
        with autocast(device, amp):
            loss, best = model.predict(batch)
        if loss is not None:  # a batch's mean over its windows
            losses.append(loss.detach().float() * len(chosen))
            counted += len(chosen)
        for i, output in zip(chosen, model.decoder.unbatch(best, lengths[chosen].tolist())):
            outputs[i] = output
        batches += 1
    mean_loss = torch.stack(losses).sum().item() / counted if losses else None
    return outputs, mean_loss, batches


def predict_split(
    model: Model,
    task: Task,
    split: EncodedSplit,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    context: Context = SINGLE,
) -> tuple[list[Any], float | None, int]:
    """The task's prediction for every text of `split` (its windows combined), the mean loss,
    and the batch count.

    In a distributed run each rank predicts the texts `rank, rank + world, ...` and every rank
    gets all texts' predictions back: the same result as one process, in a `world`th of the time."""
    mine = np.flatnonzero(split.window_text % context.world == context.rank) if context.active else None
    outputs, loss, batches = infer(model, task, split, batch_size, device, amp, mine)
    texts = range(context.rank, len(split.text_starts) - 1, context.world) if context.active else None
    predictions = split.combine(task, outputs, model.decoder.target, texts)
    if context.active:
        parts = context.gather((predictions[context.rank :: context.world], loss, len(mine), batches))
        for rank, (part, *_) in enumerate(parts):
            predictions[rank :: context.world] = part
        batches = sum(n for *_, n in parts)
        counted = [(mean, windows) for _, mean, windows, _ in parts if mean is not None]
        loss = sum(mean * n for mean, n in counted) / sum(n for _, n in counted) if counted else None
    return predictions, loss, batches


def choose_target(section: Any, task: Task) -> str:
    """The target the recipe's decoder learns from: the first of its `targets` the task gives;
    an error naming both sides when none is."""
    cls = section.component.cls
    wanted = tuple(getattr(cls, "targets", ()))
    given = task.targets()
    for target in wanted:
        if target in given:
            return target
    raise NlpfwError(
        f"decoder.type: {section.type} learns from {' or '.join(wanted) or 'no target'}, which task "
        f"{type(task).__name__} does not give (it gives {', '.join(given) or 'none'})"
    )


def build_decoder(section: Any, encoder: Encoder, task: Task) -> Decoder:
    """The recipe's decoder (`section`: its validated recipe section) for `encoder` and `task`,
    built with its target and that target's label names; an error if the task cannot give a
    target the decoder learns from, or the decoder refuses the labels."""
    target = choose_target(section, task)
    try:
        return section.component.cls(section.config, encoder.output_dim, task.target_labels(target), target)
    except ValueError as error:
        raise NlpfwError(f"decoder: {section.type}: {error}") from None


def save_model(directory: Path, model: Model, task: Task, recipe: Recipe) -> None:
    """Write the model folder; every file is replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save(directory / "encoder")
    target = model.decoder.target
    io.write_json(directory / "labels.json", {"labels": task.labels, "target": target, "target_labels": model.decoder.labels})
    io.write_text(directory / "recipe.toml", recipe.for_model().to_toml())
    io.atomic_write(directory / WEIGHTS, lambda tmp: safetensors.torch.save_model(model, str(tmp)))


@dataclass
class LoadedModel:
    """A model folder loaded for prediction: `nlpfw.load(RUN_DIR)` returns one."""

    recipe: Recipe
    task: Task
    model: Model
    device: torch.device
    directory: Path | None = None

    def encode(self, examples: list[Example]) -> EncodedSplit:
        """Examples encoded and windowed exactly as in training."""
        window, stride = window_settings(
            self.recipe.trainer.window, self.recipe.trainer.stride, self.model.encoder.max_chars
        )
        return encode_split(examples, partial(self.task.encode, encoder=self.model.encoder), window, stride)

    def predictions(self, texts: Sequence[str], batch_size: int = 64) -> list[Any]:
        """The task's prediction for each text, in input order (NER: a list of `Span`s whose
        offsets index the text exactly; a classifier: its classes and scores).

        Texts are batched by length and texts longer than the encoder's window are windowed,
        as in training."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text in a list")
        predicted, _, _ = predict_split(self.model, self.task, self.encode([Example(t) for t in texts]), batch_size, self.device)
        return predicted

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """A JSON-ready record for each text, in input order: `{"text", ...}` with the task's
        fields (NER: `"entities"`, `{"type", "text", "start", "end"}` each, whose `start`/`end`
        are character offsets into the text; a classifier: `"label"` and `"scores"`)."""
        return [{"text": t, **self.task.output(t, p)} for t, p in zip(texts, self.predictions(texts, batch_size))]

    def evaluate(self, examples: list[Example], batch_size: int = 64) -> dict[str, Any]:
        """Scores on labelled examples, as a run's evaluation record (scores, loss, timings)."""
        return evaluate_split(self.model, self.task, self.encode(examples), batch_size, self.device)


def evaluate_split(
    model: Model,
    task: Task,
    split: EncodedSplit,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    context: Context = SINGLE,
) -> dict[str, Any]:
    """Loss, the task's scores on the whole texts, and valid timings of one labelled split
    (the texts without a gold annotation are left out of the scores)."""
    synchronize(device)
    start = time.perf_counter()
    predicted, loss, batches = predict_split(model, task, split, batch_size, device, amp, context)
    synchronize(device)
    elapsed = time.perf_counter() - start
    pairs = [(e.gold, p) for e, p in zip(split.examples, predicted) if e.gold is not None]
    evaluation = task.score([g for g, _ in pairs], [p for _, p in pairs])
    if not isinstance(evaluation, Evaluation):
        raise TypeError(f"{type(task).__name__}.score must return nlpfw.interfaces.Evaluation")
    return {
        "dev_loss": loss,
        **evaluation.to_record(),
        "speed": {"valid_step_time": elapsed / max(batches, 1), "valid_epoch_time": elapsed},
    }


def main_score(record: dict[str, Any]) -> tuple[str, float, bool]:
    """(name, value, higher is better) of an evaluation record's main score (records written
    before tasks named one are read by `nlpfw.report.evaluation_fields`)."""
    from nlpfw.report import evaluation_fields

    main = evaluation_fields(record)["main"]
    return main["name"], main["value"], main.get("higher_is_better", True)


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
    # model folders from before tasks named their labels generically held NER's entity types
    task = recipe.task.component.cls(recipe.task.config, labels["labels"] if "target" in labels else labels["entity_types"])
    expected = task.target_labels(labels["target"]) if "target" in labels else []
    if expected and labels["target_labels"] != expected:  # [] : the decoder names them (mlm.v1: the vocabulary)
        # the decoder's outputs are ids into the saved names: another inventory (an edited
        # task.scheme, say) would read every tag wrong
        raise NlpfwError(
            f"{directory}: labels.json's {labels['target']} labels ({_names(labels['target_labels'])}) are not "
            f"those the task of recipe.toml gives ({_names(task.target_labels(labels['target']))}); "
            "restore the task section the model was trained with"
        )
    encoder = recipe.encoder.component.cls.from_saved(recipe.encoder.config, directory / "encoder")
    model = Model(encoder, build_decoder(recipe.decoder, encoder, task))
    safetensors.torch.load_model(model, str(directory / WEIGHTS), device="cpu")
    device = torch.device(device)
    model.to(device).eval()
    return LoadedModel(recipe, task, model, device, directory)


def _names(names: Sequence[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")
