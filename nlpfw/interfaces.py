"""Base classes of the four component kinds: Task, Encoder, Decoder, Dataset.

A component declares its options as a pydantic model (`config_model`); the recipe
section with the component's `type` is validated against it before anything heavy
happens, and the validated model is what the constructor receives.

Shapes are character-aligned: an encoder turns a text into exactly one input id per
character and returns one hidden vector per character, so every offset a task reports
indexes the original text, whatever the text holds.

Decoders come in two kinds, equals to the core, named by `Decoder.target`:

- `"tags"`: one tag id per character (CRF, softmax). The loss reads the batch's `tags`
  column [batch, chars]; `decode` returns tag ids [batch, chars]; the task reads them back
  into spans with `Task.spans`.
- `"spans"`: whole spans scored at once (GlobalPointer, span heads). The loss reads the
  batch's `spans` table [k, 4] of (row, start, end, label id) rows; `decode` returns a table
  of the same form; `Task.output_spans` names their labels. Such a decoder sees every gold
  span, nested ones included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nlpfw.errors import DataError


class Config(BaseModel):
    """Base of every component's options: unknown keys are rejected, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, order=True, slots=True)
class Span:
    """An entity: `text[start:end]` (end exclusive) of type `label`."""

    start: int
    end: int
    label: str

    def text_in(self, text: str) -> str:
        return text[self.start : self.end]


@dataclass(slots=True)
class Example:
    """One text with its gold spans (`None` when the split carries no labels)."""

    text: str
    spans: list[Span] | None = None
    id: Any = None


@dataclass
class Reference:
    """Published results a report shows beside ours (F1 values as fractions, 0-1).

    `speed` rows map a device name to its four timings in seconds (`speed_setup` says what
    model and batch they timed); `model` rows map a system to precision/recall/f1/loss;
    `entities` maps a column (a published system) to per-entity F1 and `overall`.
    """

    source: str
    speed_setup: str = ""
    speed: dict[str, dict[str, float]] = field(default_factory=dict)
    model: dict[str, dict[str, float]] = field(default_factory=dict)
    entities: dict[str, dict[str, float]] = field(default_factory=dict)


class Dataset:
    """A corpus: named splits of `Example`s and the entity types they use."""

    config_model: ClassVar[type[Config]] = Config

    def __init__(self, config: Config, data_root: Path):
        self.config = config
        self.data_root = data_root
        self.skipped: list[str] = []  # "file:line: what was wrong", for each record skipped

    def splits(self) -> tuple[str, ...]:
        """Names of the splits this corpus has (`train` and `dev` are used for training)."""
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        """Read one split; raise `DataError` naming the file and line on bad input."""
        raise NotImplementedError

    def entity_types(self) -> list[str]:
        """Entity types in a fixed order, so that label maps are stable across runs."""
        raise NotImplementedError

    def reference(self) -> Reference | None:
        """Published results to show beside ours, or None."""
        return None

    def files(self, split: str) -> list[Path] | None:
        """The files `load(split)` reads. Their contents key the tokenised-corpus cache;
        None (the default) means the split is not cached."""
        return None

    def bad_data(self, where: str, message: str, on_error: str = "raise") -> None:
        """Report bad data at `where` (`file:line`): raise `DataError`, or, when `on_error` is
        `"skip"`, record it in `skipped` (the run's report counts them) and return, so the
        caller leaves the record or span out."""
        if on_error != "skip":
            raise DataError(f"{where}: {message} (set dataset.on_error = \"skip\" to skip such records)")
        self.skipped.append(f"{where}: {message}")


class EncoderConfig(Config):
    """Options every encoder has."""

    lr: float | None = Field(default=None, gt=0, description="learning rate (default: trainer.lr)")


class Encoder(nn.Module):
    """Text to one hidden vector per character.

    Subclasses set `output_dim` and `max_chars` (the longest text the encoder takes in one
    window, or None for no limit).
    """

    config_model: ClassVar[type[Config]] = EncoderConfig
    output_dim: int
    max_chars: int | None = None
    needs_training_texts: ClassVar[bool] = False  # True: the runner calls fit_texts before char_ids

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config: Config, data_root: Path) -> Encoder:
        """Build for training: load pretrained weights or initialise from scratch."""
        raise NotImplementedError

    @classmethod
    def from_saved(cls, config: Config, directory: Path) -> Encoder:
        """Rebuild the architecture from what `save` wrote; the caller loads the weights."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write what `from_saved` needs (tokenizer, architecture), but not the weights."""
        raise NotImplementedError

    def fit_texts(self, texts: Iterable[str]) -> None:
        """Learn what depends on the data (a vocabulary built from the training texts).

        Called by the runner once, after `from_config` and before any `char_ids`, with the
        texts of the training split, on encoders whose `needs_training_texts` is true; what it
        learns must be written by `save`, since `from_saved` never sees the texts."""
        raise NotImplementedError

    def char_ids(self, text: str) -> Sequence[int]:
        """Exactly one input id per character of `text` (a list or a 1-D integer array)."""
        raise NotImplementedError

    def fingerprint(self) -> str | None:
        """A digest of everything `char_ids` depends on (the vocabulary and lookup rules);
        tokenised corpora are cached under it. None (the default) turns the cache off."""
        return None

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`input_ids`, `mask`: [batch, chars]. Returns [batch, chars, output_dim]."""
        raise NotImplementedError


class DecoderConfig(Config):
    """Options every decoder has."""

    lr: float | None = Field(default=None, gt=0, description="learning rate (default: trainer.lr)")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout before the classifier")


TARGETS = ("tags", "spans")


class Decoder(nn.Module):
    """Hidden vectors to predictions (tags or spans, see `target`), with the training loss.

    `num_tags` is the size of the label set of the decoder's target
    (`Task.target_labels(target)`): the task's tag names for a tag decoder, its entity types
    for a span decoder.
    """

    config_model: ClassVar[type[Config]] = DecoderConfig
    target: ClassVar[str] = "tags"  # "tags" or "spans": what the loss learns from and decode returns

    def __init__(self, config: Config, input_dim: int, num_tags: int):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.num_tags = num_tags

    def loss(self, hidden: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scalar training loss; `mask`: [batch, chars] bool.

        `tags` is the batch's column named by `target`: tag ids [batch, chars] for a tag
        decoder; for a span decoder the gold spans as a [k, 4] long tensor of
        (row, start, end, label id) rows, `end` exclusive and window-relative."""
        raise NotImplementedError

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predictions: for a tag decoder the best tag ids [batch, chars], 0 outside `mask`;
        for a span decoder a [k, 4] long tensor of (row, start, end, label id) rows, `end`
        exclusive, inside the mask."""
        raise NotImplementedError


class Task:
    """Turns examples into model inputs and predictions back into spans, and scores them."""

    config_model: ClassVar[type[Config]] = Config
    targets: ClassVar[tuple[str, ...]] = ("tags",)  # the decoder targets `encode` provides

    def __init__(self, config: Config, entity_types: Sequence[str]):
        self.config = config
        self.entity_types = list(entity_types)

    @property
    def labels(self) -> list[str]:
        """Tag names; a tag id is its index here."""
        raise NotImplementedError

    def target_labels(self, target: str) -> list[str]:
        """The label set a decoder of `target` predicts over: tag names or entity types."""
        return self.labels if target == "tags" else list(self.entity_types)

    def encode(self, example: Example, encoder: Encoder) -> dict[str, Any]:
        """One whole text's features; the core cuts them into windows and batches them.

        Every 1-D numpy array in the result is a per-character column as long as the text
        (`input_ids` is required; `tags` when the example has gold spans) and is windowed.
        Every 2-D integer array of shape [n, 3] is a span table of (start, end, label id) rows
        (`spans`, the gold spans for span decoders): a window gets the rows that lie wholly
        inside it, shifted to window offsets. Other values are read only by the run's report
        (`dropped`: gold spans the tags could not hold). Never truncate: long texts are
        windowed by the core.
        """
        raise NotImplementedError

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of windows into a batch of tensors: per-character columns become
        [batch, chars] (with a bool `mask`); a span table becomes [k, 4] (row, start, end,
        label id)."""
        raise NotImplementedError

    def spans(self, text: str, tag_ids: Sequence[int]) -> list[Span]:
        """Spans of one text (or window) from its predicted tag ids (one per character)."""
        raise NotImplementedError

    def output_spans(self, text: str, output: np.ndarray, target: str) -> list[Span]:
        """Spans of one text (or window) from a decoder's output for it: tag ids [chars]
        for `"tags"` (read by `spans`), or (start, end, label id) rows [n, 3] for `"spans"`."""
        if target == "tags":
            return self.spans(text, output.tolist())
        labels = self.target_labels(target)
        return sorted(Span(int(s), int(e), labels[int(k)]) for s, e, k in output)
