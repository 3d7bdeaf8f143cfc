"""Base classes of the five component kinds: Task, Encoder, Decoder, Dataset, Callback.

A component declares its options as a pydantic model (`config_model`); the recipe
section with the component's `type` is validated against it before anything heavy
happens, and the validated model is what the constructor receives.

Shapes are character-aligned: an encoder turns a text into exactly one input id per
character and returns one hidden vector per character, so every offset a task reports
indexes the original text, whatever the text holds.

The core knows no task's vocabulary. A **task** says what a gold annotation is (entity
spans, a class, several classes, a number, ...), turns an example into model inputs and
targets, turns a decoder's outputs for the windows of a text back into one prediction,
scores predictions (its main score and the details its report shows), and writes the JSON
record of a prediction. A **decoder** learns from one of the targets the task provides
(`Decoder.targets`, matched against `Task.targets()`), over that target's label set, which it
receives at construction. The core windows, caches, batches, trains, evaluates, predicts,
reports and exports through these contracts alone. A **callback** acts during training
(adversarial passes, weight averages, logging) through the trainer's life-cycle hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nlpfw.errors import DataError

if TYPE_CHECKING:
    from nlpfw.trainer import History, TrainBatch, Trainer


class Config(BaseModel):
    """Base of every component's options: unknown keys are rejected, values are checked.

    `not_content` names the options that change how the data is fetched but never what it holds
    (a dataset's `download` switch and `url`): the caches keyed on a component's settings
    (tokenised corpora, self-trained vectors) leave them out, through `content_settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    not_content: ClassVar[frozenset[str]] = frozenset()

    def content_settings(self) -> dict[str, Any]:
        """The options as JSON values, less `not_content`: what a cache key holds of them."""
        return self.model_dump(mode="json", exclude=set(self.not_content))


@dataclass(frozen=True, order=True, slots=True)
class Span:
    """A labelled character range, `text[start:end]` (end exclusive): an entity, for example."""

    start: int
    end: int
    label: str

    def text_in(self, text: str) -> str:
        return text[self.start : self.end]


@dataclass(slots=True)
class Example:
    """One text and its gold annotation, in the form its task defines (a list of `Span`s for
    NER, a list of class names for classification, ...); `None` when the text is unlabelled."""

    text: str
    gold: Any = None
    id: Any = None


@dataclass
class Reference:
    """Published results a report shows beside ours (scores as fractions, 0-1).

    `speed` rows map a device name to its four timings in seconds (`speed_setup` says what
    model and batch they timed); `model` rows map a system to its summary scores (the keys of
    `Evaluation.summary`, and `loss`); `per_label` maps a column (a published system) to its
    per-label score (the task's `Evaluation.per_label_metric`) and `overall`.
    """

    source: str
    speed_setup: str = ""
    speed: dict[str, dict[str, float]] = field(default_factory=dict)
    model: dict[str, dict[str, float]] = field(default_factory=dict)
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)


class Dataset:
    """A corpus: named splits of `Example`s and the label inventory their gold annotations use."""

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

    def labels(self) -> list[str]:
        """The label inventory of the gold annotations (entity types, classes, ...) in a fixed
        order, so that label maps are stable across runs; the task is built with it."""
        raise NotImplementedError

    def reference(self) -> Reference | None:
        """Published results to show beside ours, or None."""
        return None

    def submission(self, examples: Sequence[Example], records: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
        """A leaderboard file for predictions on one of this corpus's splits: (default file
        name, its lines). `records` are the task's prediction records, one per example. The
        default: this corpus has no submission format (`nlpfw predict --submission` says so)."""
        raise NotImplementedError

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

    def char_ids(self, text: str) -> Sequence[int] | np.ndarray:
        """Exactly one input per character of `text`: an id (a list or a 1-D integer array),
        or a row of ids (a [len(text), k] integer array) when a character's input depends on
        its context, as lexicon matches do; `forward` then gets [batch, chars, k]."""
        raise NotImplementedError

    def fingerprint(self) -> str | None:
        """A digest of everything `char_ids` depends on (the vocabulary and lookup rules);
        tokenised corpora are cached under it. None (the default) turns the cache off."""
        return None

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`input_ids` [batch, chars] (or [batch, chars, k] for an encoder whose `char_ids`
        gives rows), `mask` [batch, chars]. Returns [batch, chars, output_dim]."""
        raise NotImplementedError


def input_ids(encoder: Encoder, text: str) -> np.ndarray:
    """`encoder.char_ids(text)` as an int32 array, checked to hold exactly one id per character
    (what every task's `encode` starts from)."""
    ids = np.asarray(encoder.char_ids(text), dtype=np.int32)
    if len(ids) != len(text):
        raise ValueError(
            f"encoder {type(encoder).__name__} gave {len(ids)} ids for "
            f"{len(text)} characters; encoders must give one id per character"
        )
    return ids


class DecoderConfig(Config):
    """Options every decoder has."""

    lr: float | None = Field(default=None, gt=0, description="learning rate (default: trainer.lr)")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout before the classifier")


class Decoder(nn.Module):
    """Hidden vectors to predictions, with the training loss.

    A decoder learns from one target of the task: `targets` names those it can learn from, in
    the order it prefers them, and the core picks the first the task provides (`Task.targets()`).
    Target names are the task's and the decoder's agreement, never the core's: the NER task
    gives `tags` (one tag id per character) and `spans` (a span table), the classification task
    `class` (one class id per text) or `classes` (a multi-hot row per text).

    The decoder is built with the target it learns from and that target's label names, in id
    order (`Task.target_labels`): tag names for a tag decoder (so a CRF can read the tag scheme
    and constrain its transitions), entity types for a span decoder, class names for a
    classifier. `num_labels` is their count.
    """

    config_model: ClassVar[type[Config]] = DecoderConfig
    targets: ClassVar[tuple[str, ...]] = ()  # every decoder names the targets it learns from
    output_name: ClassVar[str] = "output"  # what `decode` returns, as the ONNX graph names its output
    exportable: ClassVar[bool] = True  # False: `decode` cannot be traced to ONNX (data-dependent shapes)
    # True: `decode(hidden, mask, gold)` also gets the batch's target column (None when the batch
    # has none), for a decoder whose output scores what the batch asked of it: a masked LM
    # predicts and scores only the characters the task masked in that batch.
    reads_gold: ClassVar[bool] = False

    def __init__(self, config: Config, input_dim: int, labels: Sequence[str], target: str):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.labels = list(labels)
        self.num_labels = len(self.labels)
        self.target = target

    def bind(self, encoder: Encoder) -> None:
        """Called once with the encoder when the model is assembled (`nlpfw.model.Model`), before
        the optimizer is made and before saved weights are loaded: a decoder that depends on the
        encoder (a masked-LM head sized by its vocabulary, its output tied to the input
        embeddings) builds those parts here. The default does nothing."""

    def loss(self, hidden: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scalar training loss; `hidden` [batch, chars, input_dim], `mask` [batch, chars] bool;
        `gold` is the batch's column named by `self.target`, in the form the task collates it
        (tag ids [batch, chars]; a [k, 4] span table; class ids [batch]; ...)."""
        raise NotImplementedError

    def decode(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The batch's predictions as one tensor (tag ids [batch, chars] with 0 outside `mask`;
        a [k, 4] table of (row, start, end, label id) rows; class scores [batch, labels]; ...)."""
        raise NotImplementedError

    def unbatch(self, output: torch.Tensor, lengths: Sequence[int]) -> list[np.ndarray]:
        """`decode`'s output cut into one array per window of the batch (`lengths`: each
        window's characters). The default reads [batch, chars, ...] outputs: row i cut to its
        length. Decoders whose output has another form override it."""
        output = output.cpu().numpy()
        return [output[i, :length] for i, length in enumerate(lengths)]


def split_rows(table: torch.Tensor, batch: int) -> list[np.ndarray]:
    """A [k, 1 + n] table whose first column is the row in the batch (the form span decoders
    decode to) cut into one [rows, n] array per window: `Decoder.unbatch` for such decoders."""
    rows = table.cpu().numpy()
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    cuts = np.searchsorted(rows[:, 0], np.arange(batch + 1))
    return [rows[cuts[i] : cuts[i + 1], 1:] for i in range(batch)]


@dataclass
class Encoded:
    """What a task makes of one whole text for the core to window, batch and cache.

    - `columns`: per-character arrays as long as the text, 1-D or one row per character
      (`input_ids` is required; tag ids, ...). A window gets its slice.
    - `tables`: [n, 3] integer arrays of (start, end, label id) rows, text offsets, end
      exclusive. A window gets the rows that lie wholly inside it, shifted to window offsets.
    - `values`: per-text arrays (a class id, a multi-hot row, a number): every window of the
      text gets the same value. Each key has one shape and dtype across the texts.
    - `annotations`: how many gold annotations the example has (for the run's data summary);
      `dropped`: how many of them the targets could not hold (e.g. nested spans in flat tags).

    Nothing is ever truncated: long texts are windowed by the core.
    """

    columns: dict[str, np.ndarray]
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    annotations: int = 0
    dropped: int = 0

    def as_window(self) -> dict[str, np.ndarray]:
        """The whole text as one window, in the form `Task.collate` takes."""
        return {**self.columns, **self.tables, **self.values}


@dataclass(frozen=True)
class Window:
    """One window of a text and the decoder's output for it (`Decoder.unbatch`'s array):
    it covers `text[start:start + length]` and owns `text[owned[0]:owned[1]]` (text offsets):
    each character is owned by exactly one window, the one in which it is farthest from a cut
    edge. A task combines a text's windows into one prediction, e.g. keeping the entities that
    start in owned characters, or averaging class scores weighted by the owned length."""

    start: int
    length: int
    owned: tuple[int, int]
    output: np.ndarray


@dataclass
class Evaluation:
    """A task's scores of one split.

    `summary` holds the headline figures in display order (NER: precision, recall, f1; a
    classifier: accuracy, macro_f1, micro_f1); `main` names the one the trainer keeps the best
    model and applies patience by (`higher_is_better` says which way is better). `per_label`
    maps each label (and "overall") to its figures, of which `per_label_metric` is the one
    tables and plots show, with `support`. `details` is anything else the task records (NER:
    its tp/fp/fn counts); `note` says how the scores were computed (a report caption);
    `label_kind` names the labels in titles ("entity", "class").
    """

    main: str
    summary: dict[str, float]
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    per_label_metric: str = "f1"
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    label_kind: str = "label"

    @property
    def value(self) -> float:
        return self.summary[self.main]

    def to_record(self) -> dict[str, Any]:
        """The evaluation's fields of a metrics.jsonl record."""
        return {
            "main": {"name": self.main, "value": self.value, "higher_is_better": self.higher_is_better},
            "summary": self.summary,
            "per_label": self.per_label,
            "per_label_metric": self.per_label_metric,
            "label_kind": self.label_kind,
            "metric": self.note,
            "scores": self.details,
        }


class Task:
    """What a kind of annotation is, and how it is learned, predicted, scored and written.

    A task is built with its config and the label inventory the dataset reads
    (`Dataset.labels()`, kept in the model folder's labels.json)."""

    config_model: ClassVar[type[Config]] = Config
    label_kind: ClassVar[str] = "label"  # what its labels are called in reports: "entity", "class"

    def __init__(self, config: Config, labels: Sequence[str]):
        self.config = config
        self.labels = list(labels)

    def targets(self) -> tuple[str, ...]:
        """The targets `encode` provides for decoders to learn from (see `Decoder.targets`)."""
        raise NotImplementedError

    def target_labels(self, target: str) -> list[str]:
        """The label names of `target`'s ids, in id order (a decoder predicts over them)."""
        raise NotImplementedError

    def encode(self, example: Example, encoder: Encoder) -> Encoded:
        """One whole text's inputs (and, when `example.gold` is not None, its targets)."""
        raise NotImplementedError

    def collate(self, windows: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        """Pad a list of windows (each a dict of its columns, tables and values) into a batch
        of tensors: at least `input_ids` [batch, chars] (or [batch, chars, k], see
        `Encoder.char_ids`) and a bool `mask` [batch, chars], and
        each target in the form its decoders read."""
        raise NotImplementedError

    def combine(self, text: str, windows: Sequence[Window], target: str) -> Any:
        """The prediction for a whole text from its windows' outputs (a decoder of `target`
        made them); the windows are in text order and together own every character."""
        raise NotImplementedError

    def score(self, gold: Sequence[Any], predicted: Sequence[Any]) -> Evaluation:
        """Scores of predictions against gold annotations, one of each per text."""
        raise NotImplementedError

    def output(self, text: str, prediction: Any) -> dict[str, Any]:
        """The JSON-ready fields of a prediction record (NER: `{"entities": [...]}`)."""
        raise NotImplementedError

    def gold_to_json(self, gold: Any) -> Any:
        """A gold annotation as JSON (for the corpus cache); the default takes it as it is."""
        return gold

    def gold_from_json(self, data: Any) -> Any:
        """The inverse of `gold_to_json`."""
        return data

    def annotation_count(self, gold: Any) -> int:
        """How many annotations a gold value holds, for the data summary (default: its length)."""
        return len(gold) if isinstance(gold, (list, tuple)) else 1

    def file_dataset(self, path: Path, dataset_type: str, dataset_config: Config) -> tuple[str, dict[str, Any]]:
        """How to read a user's labelled file for `nlpfw evaluate --data PATH`: a dataset name
        and its recipe section (without `type`). `dataset_type`/`dataset_config` are those of
        the model's own recipe. The default: the model's dataset, if it reads a file per split
        (`path`, `dev` options), pointed at the file."""
        options = dataset_config.model_dump()
        if "path" not in options or "dev" not in options:
            raise DataError(f"--data: {dataset_type} does not read single files; this task names no other reader")
        options.update(path=str(path.parent.absolute()), train=path.name, dev=path.name)
        return dataset_type, options

    def notes(self, stats: dict[str, Any], target: str) -> list[str]:
        """Lines the runner prints about the encoded corpus (`stats`: split name to its
        `nlpfw.corpus.Stats`), e.g. what the targets could not hold. Default: none."""
        return []


class Callback:
    """A training behaviour a recipe turns on with a `[[callbacks]]` table (`type = "fgm.v1"`
    and the options of `config_model`); any number of them run in the recipe's order.

    Every hook receives the `nlpfw.trainer.Trainer`, whose attributes a callback may read and
    change: `model` (the `nlpfw.model.Model`), `ddp` (the module training steps run through:
    the model itself, or its DistributedDataParallel wrapper), `optimizer`, `scheduler`,
    `scaler`, `config` (the `[trainer]` options), `device`, `amp`, `context` (ranks),
    `position` (epoch, batch, step), `history`, `run_dir` (None outside a run) and `console`.

    A callback whose state matters to the rest of a run returns it from `state_dict` (tensors,
    numbers, strings, lists and dicts of them): it is saved with every checkpoint and given
    back to `load_state_dict` on `--resume` before `on_train_start`, so that a resumed run
    continues exactly.
    """

    config_model: ClassVar[type[Config]] = Config
    extra_passes: ClassVar[bool] = False
    """True for a callback that runs more forward and backward passes on each batch (adversarial
    training): it must call `batch.forward_backward(last=True)` exactly once per batch, on its
    last pass; the gradients are averaged over the ranks then. At most one per recipe."""

    def __init__(self, config: Config):
        self.config = config

    def on_train_start(self, trainer: Trainer) -> None:
        """Training is about to begin (or go on, after `--resume`); the optimizer exists."""

    def on_batch_start(self, trainer: Trainer, batch: TrainBatch) -> None:
        """Before the forward pass of a batch (`batch.inputs` are on the device)."""

    def after_backward(self, trainer: Trainer, batch: TrainBatch) -> None:
        """After the batch's backward pass (its gradients added to the parameters'), before any
        optimizer step: every batch, also those that only accumulate. `batch.loss` is its loss;
        `batch.forward_backward()` runs another pass over it, as the trainer runs its own."""

    def before_step(self, trainer: Trainer) -> None:
        """Before the optimizer step: the gradients are complete (averaged over the ranks and
        unscaled), not yet clipped."""

    def after_step(self, trainer: Trainer) -> None:
        """After the optimizer and scheduler stepped (`trainer.position.step` counts it)."""

    def evaluation_weights(self, trainer: Trainer) -> contextlib.AbstractContextManager[None]:
        """The weights to evaluate with and to save as the run's model, for the time of the
        context (e.g. a moving average swapped in); the default leaves the model as it is."""
        return contextlib.nullcontext()

    def on_evaluate(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each evaluation, before the run writes it: `record` is the epoch's record
        (the task's scores, losses, timings; `record["best"]` says whether it is the new best)."""

    def on_train_end(self, trainer: Trainer, history: History) -> None:
        """Training stopped: at its end, early, on Ctrl-C or on an error (release files here)."""

    def state_dict(self) -> dict[str, Any]:
        """What to save with a checkpoint; the default: nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned, on `--resume`."""
