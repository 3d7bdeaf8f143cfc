"""`jsonl_spans.v1`: your own entity spans as JSON lines, any entity types.

Each line is one text, in either of two forms (chosen per line by the key it has):

    {"text": "...", "label": {"TYPE": {"surface": [[start, end], ...]}}}   CLUENER form, end inclusive
    {"text": "...", "spans": [{"start": s, "end": e, "label": "TYPE"}]}    end exclusive; optional "text"

plus an optional `id`. In a test split a line may have neither key (a text to predict on).
Every span is checked against its text; spans in one text must not overlap (flat tags cannot
hold both).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from nlpfw import textfile
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Example, Span
from nlpfw_plugins.formats import SPAN_KEYS, Bad, cluener_records, json_lines, json_record, require_spans, spans_records
from nlpfw_plugins.splitfiles import SplitFilesConfig, SplitFilesDataset, unknown_type


class JsonlSpansConfig(SplitFilesConfig):
    train: str = Field(default="train.jsonl", description="file of the train split, in `path`")
    dev: str = Field(default="dev.jsonl", description="file of the dev split, in `path`")


class JsonlSpans(SplitFilesDataset):
    """JSON lines of texts and their entity spans, one file per split."""

    config_model = JsonlSpansConfig
    config: JsonlSpansConfig
    name = "jsonl_spans.v1"
    file_formats = {"cluener": {"form": "cluener"}, "spans": {"form": "spans"}}  # nlpfw convert's: write_file options

    def read(self, path: Path, split: str, entity_types: Sequence[str] | None) -> list[Example]:
        examples: list[Example] = []
        with textfile.open_text(path, self.bad_line) as lines:
            for number, line in lines:
                if self.full(examples):
                    break
                if line.strip():
                    reader = LineReader(self, f"{path}:{number}", entity_types)
                    example = reader.example(line, labelled=split != "test")
                    if example is not None:
                        examples.append(example)
        return examples

    def bad_line(self, where: str, message: str) -> None:
        self.bad_data(where, message, self.config.on_error)

    @classmethod
    def read_file(cls, path: Path, bad: Bad) -> list[Example]:
        """Every line of one file in either form, every span kept (overlapping ones too), lines
        without spans unlabelled; bad data through `bad`. For `nlpfw convert`."""
        dataset = cls(cls.config_model(path=str(path.parent)), path.parent)
        dataset.bad_data = lambda where, message, on_error="raise": bad(where, message)  # type: ignore[method-assign]
        examples = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    example = KeepAllReader(dataset, f"{path}:{number}", None).example(line, labelled=False)
                    if example is not None:
                        examples.append(example)
        return examples

    @classmethod
    def write_file(cls, examples: Sequence[Example], form: str = "spans") -> tuple[str, int, list[str]]:
        """(JSON lines in the `spans` form or CLUENER's `label` form; every text written; no notes)."""
        require_spans(examples, "cluener" if form == "cluener" else "spans")
        return json_lines(cluener_records(examples) if form == "cluener" else spans_records(examples)), len(examples), []

    @classmethod
    def detect_format(cls, path: Path, first: str) -> str | None:
        """A JSON line whose `label` is an object: `cluener`; one without doccano's span lists
        (`label`, `labels`, `entities`) or a class label (a string or number `label`): `spans`."""
        record = json_record(first)
        if record is None:
            return None
        if isinstance(record.get("label"), dict):
            return "cluener"
        if isinstance(record.get("label"), (str, int, float)):
            return None  # a class label: text_labels.v1's
        return None if any(isinstance(record.get(k), list) for k in SPAN_KEYS) else "spans"


LABEL_FORM = "{type: {surface: [[start, end], ...]}}"
SPAN_FORM = '{"start": int, "end": int, "label": str} (and an optional "text": str)'


class LineReader:
    """Reads one line; each problem goes to the dataset's `bad_data` at the line's `where`."""

    def __init__(self, dataset: JsonlSpans, where: str, entity_types: Sequence[str] | None):
        self.dataset = dataset
        self.where = where
        self.entity_types = entity_types
        self.text = ""

    def bad(self, message: str) -> None:
        """Report a problem (raises unless `on_error` is "skip"); None, so `return self.bad(...)`
        leaves the record out."""
        self.dataset.bad_data(self.where, message, self.dataset.config.on_error)

    def example(self, line: str, labelled: bool) -> Example | None:
        """The line's example, or None if the line is bad (and skipped)."""
        try:
            record = json.loads(line.rstrip())
        except json.JSONDecodeError as error:
            return self.bad(f"not valid JSON: {error.msg} at column {error.colno}")
        if not isinstance(record, dict):
            return self.bad(f"expected a JSON object, found {kind(record)}")
        if "text" not in record:
            return self.bad("no 'text' key")
        text = record["text"]
        if not isinstance(text, str):
            return self.bad(f"'text' must be a string, found {kind(text)}")
        if not text:
            return self.bad("'text' is empty")
        if (problem := textfile.surrogate_problem(text)) is not None:
            return self.bad(problem)
        self.text = text
        if "label" in record and "spans" in record:
            return self.bad("has both 'label' (CLUENER form) and 'spans'; use one")
        if "label" in record:
            spans = self.cluener_spans(record["label"])
        elif "spans" in record:
            spans = self.simple_spans(record["spans"])
        elif labelled:
            return self.bad("no 'label' or 'spans' (a train or dev line needs one; 'spans': [] for none)")
        else:
            return Example(text, None, record.get("id"))
        return None if spans is None else Example(text, self.flat(spans), record.get("id"))

    def cluener_spans(self, label: Any) -> list[tuple[Span, str]] | None:
        """`{type: {surface: [[start, end], ...]}}`, end inclusive; None if malformed as a whole."""
        if not isinstance(label, dict):
            return self.bad(f"'label' must be an object {LABEL_FORM}, found {kind(label)}")
        spans = []
        for type_, entities in label.items():
            if not isinstance(entities, dict):
                self.bad(f"malformed span record: label {type_!r} must map surfaces to [[start, end], ...], "
                         f"found {kind(entities)}")  # fmt: skip
                continue
            for surface, positions in entities.items():
                if not isinstance(positions, list):
                    self.bad(f"malformed span record: {type_} {surface!r} must have a list of [start, end], "
                             f"found {kind(positions)}")  # fmt: skip
                    continue
                for position in positions:
                    if not (isinstance(position, list) and len(position) == 2 and all(map(is_int, position))):
                        shown = json.dumps(position, ensure_ascii=False)
                        self.bad(f"malformed span record: {type_} {surface!r} position {shown} is not [start, end]")
                        continue
                    start, end = position
                    span, shown = Span(start, end + 1, type_), f"{type_} span [{start}, {end}]"
                    if self.check(span, shown, surface):
                        spans.append((span, shown))
        return spans

    def simple_spans(self, items: Any) -> list[tuple[Span, str]] | None:
        """`[{"start": s, "end": e, "label": l, "text"?: surface}]`, end exclusive."""
        if not isinstance(items, list):
            return self.bad(f"'spans' must be a list of {SPAN_FORM} objects, found {kind(items)}")
        spans = []
        for item in items:
            well_formed = (
                isinstance(item, dict) and is_int(item.get("start")) and is_int(item.get("end"))
                and isinstance(item.get("label"), str) and isinstance(item.get("text", ""), str)
            )  # fmt: skip
            if not well_formed:
                shown = json.dumps(item, ensure_ascii=False)
                self.bad(f"malformed span record {shown}: expected {SPAN_FORM}")
                continue
            span = Span(item["start"], item["end"], item["label"])
            shown = f"{span.label} span [{span.start}, {span.end})"
            if self.check(span, shown, item.get("text")):
                spans.append((span, shown))
        return spans

    def check(self, span: Span, shown: str, surface: str | None) -> bool:
        """Whether `span` fits the text (and `surface`, if given) and has a known type."""
        if not span.label.strip():
            self.bad(f"{shown.strip()}: the label is empty; a span needs an entity type")
            return False
        if not 0 <= span.start < span.end <= len(self.text):
            if 0 <= span.end <= span.start < len(self.text):
                self.bad(f"{shown} is empty or reversed")
            else:
                self.bad(f"{shown} is out of range for a text of {len(self.text)} characters")
            return False
        if surface is not None and span.text_in(self.text) != surface:
            self.bad(f"{shown} is {span.text_in(self.text)!r} in the text, not {surface!r}")
            return False
        if self.entity_types is not None and span.label not in self.entity_types:
            self.bad(f"{shown}: {unknown_type(span.label, self.entity_types)}")
            return False
        return True

    def flat(self, spans: list[tuple[Span, str]]) -> list[Span]:
        """The spans, sorted, without duplicates; of two that overlap, the shorter (or, of two
        as long, the later) is bad data."""
        kept: dict[Span, str] = {}
        longest_first = sorted(dict(spans).items(), key=lambda pair: (pair[0].start - pair[0].end, pair[0]))
        for span, shown in longest_first:
            other = next((k for k in kept if span.start < k.end and k.start < span.end), None)
            if other is None:
                kept[span] = shown
            else:
                this, that = span.text_in(self.text), other.text_in(self.text)
                self.bad(f"{shown} {this!r} overlaps {kept[other]} {that!r} (flat tags hold one entity per character)")
        return sorted(kept)


class KeepAllReader(LineReader):
    """A line reader that keeps overlapping spans (a converter should lose nothing)."""

    def flat(self, spans: list[tuple[Span, str]]) -> list[Span]:
        return sorted({span for span, _ in spans})


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


@hookimpl
def register_datasets(register):
    register("jsonl_spans.v1", JsonlSpans)
