"""What `label_studio.v1` and `doccano.v1` share: a folder of split files, as `conll.v1` has,
or one export cut into train and dev (`split`), since an annotation tool exports one file; and
gold annotations that are entity spans or classes, as the export holds (the label inventory is
`entity_types` or `classes` when the recipe gives it, else what train and dev use, sorted).

Not a plugin itself: it registers nothing, so it is not in `BUILTIN_PLUGINS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator

from nlpfw.errors import DataError
from nlpfw.interfaces import Example
from nlpfw_plugins.formats import is_classes, label_names, split_examples
from nlpfw_plugins.splitfiles import SplitFilesConfig, SplitFilesDataset, unknown_type


class ExportConfig(SplitFilesConfig):
    split: float | None = Field(
        default=None, gt=0, lt=1,
        description="make dev from this share of the train file's texts (a seeded hash of each text) instead of reading `dev`",
    )  # fmt: skip
    seed: int = Field(default=0, description="seed of the `split` hash")
    classes: list[str] | None = Field(
        default=None, min_length=1,
        description="classification: the classes in order; others are bad data (none: those of train and dev, sorted)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _dev_or_split(self) -> ExportConfig:
        # the run folder's resolved recipe holds every key, `dev` at its default too: only another file clashes
        if self.split is not None and "dev" in self.model_fields_set and self.dev != type(self).model_fields["dev"].default:
            raise ValueError("give dev (a file) or split (a share of train), not both")
        if self.classes is not None and self.entity_types is not None:
            raise ValueError("give entity_types (entities) or classes (classification), not both")
        return self


class ExportDataset(SplitFilesDataset):
    """A tool's export: one file per split, or with `split` one file for train and dev.

    Subclasses read one file into all its examples (`read_all`); texts without labels are left
    out of train and dev (a tool exports the tasks nobody has labelled yet too) and kept in a
    test split, as texts to predict on."""

    config: ExportConfig

    def files(self, split: str) -> list[Path]:
        if self.config.split is not None and split == "dev":
            return super().files("train")
        return super().files(split)

    def read_all(self, path: Path, split: str) -> list[Example]:
        raise NotImplementedError

    def read(self, path: Path, split: str, entity_types: Sequence[str] | None) -> list[Example]:
        examples = self.labelled(self.read_all(path, split), split, entity_types, path)
        return examples if self.config.split is not None else self.limited(examples)

    def load(self, split: str) -> list[Example]:
        if self.config.split is None or split not in ("train", "dev"):
            return super().load(split)
        if split not in self._loaded:
            (path,) = self.files("train")
            examples = self.read(path, "train", self.allowed_types("train"))
            train, dev = split_examples(examples, self.config.split, self.config.seed)
            if not dev or not train:
                raise DataError(
                    f"dataset.split: a share of {self.config.split} of the {len(examples)} labelled texts in {path} "
                    f"leaves {'dev' if not dev else 'train'} empty; label more texts or change the share"
                )
            self._loaded["train"], self._loaded["dev"] = self.limited(train), self.limited(dev)
        return self._loaded[split]

    def labels(self) -> list[str]:
        """`entity_types` or `classes` as given, else the sorted labels used in train and dev."""
        given = self.config.entity_types or self.config.classes
        if given is not None:
            return list(given)
        examples = self.load("train") + self.load("dev")
        return sorted({name for example in examples for name in label_names(example.gold)})

    def allowed_types(self, split: str) -> list[str] | None:
        if self.config.entity_types is not None or self.config.classes is not None or split == "test":
            return self.labels()
        return None

    def limited(self, examples: list[Example]) -> list[Example]:
        return examples if self.config.limit is None else examples[: self.config.limit]

    def labelled(self, examples: list[Example], split: str, entity_types: Sequence[str] | None, path: Path) -> list[Example]:
        """Train and dev keep the labelled texts; spans of a type outside `entity_types` are bad data
        (the span is left out), and so are classes outside them (the text is left out)."""
        if split != "test":
            examples = [e for e in examples if e.gold is not None]
        if entity_types is None:
            return examples
        kept = []
        for number, example in enumerate(examples, 1):
            if example.gold is None or all(name in entity_types for name in label_names(example.gold)):
                kept.append(example)
                continue
            if is_classes(example.gold):
                where = f"{path}:{'id ' + str(example.id) if example.id is not None else 'text ' + str(number)}"
                unknown = next(name for name in example.gold if name not in entity_types)
                self.bad_data(where, f"unknown class {unknown!r}; classes: {', '.join(entity_types)}", self.config.on_error)
                continue
            spans = []
            for span in example.gold:
                if span.label in entity_types:
                    spans.append(span)
                else:
                    where = f"{path}:{'id ' + str(example.id) if example.id is not None else 'text ' + str(number)}"
                    shown = f"{span.label} span [{span.start}, {span.end}) {span.text_in(example.text)!r}"
                    self.bad_data(where, f"{shown}: {unknown_type(span.label, entity_types)}", self.config.on_error)
            kept.append(Example(example.text, spans, example.id))
        return kept
