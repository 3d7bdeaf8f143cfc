"""What `conll.v1` and `jsonl_spans.v1` share: one file per split in a folder, entity types
from the recipe or from the data, and bad records raised or skipped (`on_error`).

Not a plugin itself: it registers nothing, so it is not in `BUILTIN_PLUGINS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from nlpfw.data import resolve
from nlpfw.errors import DataError
from nlpfw.interfaces import Config, Dataset, Example

OnError = Literal["raise", "skip"]


class SplitFilesConfig(Config):
    """Options of a corpus held as one file per split; subclasses set the file name defaults."""

    path: str = Field(description="folder holding the split files, under the data root (or absolute)")
    train: str = Field(description="file of the train split, in `path`")
    dev: str = Field(description="file of the dev split, in `path`")
    test: str | None = Field(default=None, description="file of a test split, in `path` (none: no test)")
    entity_types: list[str] | None = Field(
        default=None, min_length=1,
        description="entity types in label order; others are bad data (none: those of train and dev, sorted)",
    )  # fmt: skip
    limit: int | None = Field(default=None, ge=1, description="read at most N records of each split")
    on_error: OnError = Field(default="raise", description="bad data: raise, or skip the record and count it")


class SplitFilesDataset(Dataset):
    """A corpus of one file per split; subclasses say how to `read` one file."""

    config_model: ClassVar[type[Config]] = SplitFilesConfig
    config: SplitFilesConfig
    name: ClassVar[str]  # the registered name, for messages

    def __init__(self, config: SplitFilesConfig, data_root: Path):
        super().__init__(config, data_root)
        self._loaded: dict[str, list[Example]] = {}

    def splits(self) -> tuple[str, ...]:
        return ("train", "dev", "test") if self.config.test is not None else ("train", "dev")

    def files(self, split: str) -> list[Path]:
        if split not in self.splits():
            hint = " (set dataset.test to add one)" if split == "test" else ""
            raise DataError(f"{self.name} has no split {split!r}{hint}; splits: {', '.join(self.splits())}")
        folder = resolve(self.config.path, self.data_root, "dataset.path", directory=True)
        name = getattr(self.config, split)
        return [resolve(folder / name, self.data_root, f"dataset.{split}")]

    def load(self, split: str) -> list[Example]:
        """Read one split (once: later calls return the same examples)."""
        if split not in self._loaded:
            (path,) = self.files(split)
            self._loaded[split] = self.read(path, split, self.allowed_types(split))
        return self._loaded[split]

    def labels(self) -> list[str]:
        """`dataset.entity_types` as given, else the sorted types used in train and dev."""
        if self.config.entity_types is not None:
            return list(self.config.entity_types)
        examples = self.load("train") + self.load("dev")
        return sorted({span.label for example in examples for span in example.gold or ()})

    def allowed_types(self, split: str) -> list[str] | None:
        """The types `split` may use, or None for any: train and dev define them when the
        recipe does not, so only a test split is checked against them."""
        if self.config.entity_types is not None or split == "test":
            return self.labels()
        return None

    def read(self, path: Path, split: str, entity_types: Sequence[str] | None) -> list[Example]:
        """The examples of one split file, at most `limit`; bad data goes through `bad_data`."""
        raise NotImplementedError

    def full(self, examples: list[Example]) -> bool:
        """Whether `limit` examples have been read."""
        return self.config.limit is not None and len(examples) >= self.config.limit


def unknown_type(label: str, entity_types: Sequence[str]) -> str:
    """The message for an entity type outside `entity_types`."""
    return f"unknown entity type {label!r}; entity types: {', '.join(entity_types) or 'none'}"
