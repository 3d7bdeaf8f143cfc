"""`nlpfw convert IN OUT`: a corpus from one format to another (see `nlpfw_plugins.formats`).

Not a plugin (it registers nothing). Each format is read by the reader its dataset uses, with
one difference: every span is kept (overlapping ones too), since a converter should lose
nothing it can write. Texts without labels (a Label Studio task nobody annotated, a plain
text) stay unlabelled where the target can say so, and are left out of CoNLL, which cannot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlpfw import io
from nlpfw.errors import DataError
from nlpfw.interfaces import Example, Span
from nlpfw_plugins.conll import Conll, ConllConfig
from nlpfw_plugins.formats import (
    FORMATS,
    LabelStudioOptions,
    cluener_records,
    conll_text,
    detect_format,
    doccano_records,
    json_lines,
    label_studio_tasks,
    read_doccano,
    read_label_studio,
    read_texts,
    spans_records,
)
from nlpfw_plugins.jsonl_spans import JsonlSpans, JsonlSpansConfig, LineReader


@dataclass
class Conversion:
    """What a conversion read and wrote, for the command's summary."""

    source_format: str
    texts: int = 0
    labelled: int = 0
    spans: int = 0
    written: int = 0
    dropped: int = 0  # spans CoNLL could not hold (overlapping a longer one)
    skipped: list[str] = field(default_factory=list)  # bad records left out (--on-error skip)


class Reporter:
    """Bad data in a conversion: raise naming `file:line` (or `file:task N`), or record it."""

    def __init__(self, on_error: str):
        self.on_error = on_error
        self.skipped: list[str] = []

    def __call__(self, where: str, message: str) -> None:
        if self.on_error != "skip":
            raise DataError(f"{where}: {message} (use --on-error skip to leave such records out)")
        self.skipped.append(f"{where}: {message}")


class _KeepAll(LineReader):
    """`jsonl_spans.v1`'s line reader keeping overlapping spans (CLUENER's train has a nested pair)."""

    def flat(self, spans: list[tuple[Span, str]]) -> list[Span]:
        return sorted({span for span, _ in spans})


def read_corpus(path: Path, form: str, report: Reporter, text_field: str = "text") -> list[Example]:
    """Every text of `path` in format `form` (labelled or not), in file order."""
    if not path.is_file():
        raise DataError(f"convert: file not found: {path}")
    if form == "label-studio":
        return read_label_studio(path, report, LabelStudioOptions(text_field=text_field))
    if form == "doccano":
        return read_doccano(path, report, labelled=False)
    if form == "text":
        return read_texts(path)
    if form in ("conll", "conll-bioes"):
        conll = _ConvertConll(ConllConfig(path=str(path.parent)), path.parent)  # scheme "auto": BIO or BIOES
        conll.report = report
        return conll.read(path, "train", None)
    jsonl = _ConvertJsonl(JsonlSpansConfig(path=str(path.parent)), path.parent)
    jsonl.report = report
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                example = _KeepAll(jsonl, f"{path}:{number}", None).example(line, labelled=False)
                if example is not None:
                    examples.append(example)
    return examples


class _ConvertConll(Conll):
    report: Reporter

    def bad_data(self, where: str, message: str, on_error: str = "raise") -> None:
        self.report(where, message)


class _ConvertJsonl(JsonlSpans):
    report: Reporter

    def bad_data(self, where: str, message: str, on_error: str = "raise") -> None:
        self.report(where, message)


def write_corpus(path: Path, examples: Sequence[Example], form: str, text_field: str = "text") -> tuple[int, int]:
    """Write `examples` to `path` in format `form`; (texts written, spans CoNLL left out)."""
    dropped = 0
    if form == "label-studio":
        tasks = label_studio_tasks(examples, text_field=text_field)
        content = "[\n" + ",\n".join(json.dumps(t, ensure_ascii=False) for t in tasks) + "\n]\n"
        written = len(tasks)
    elif form in ("conll", "conll-bioes"):
        content, dropped = conll_text(examples, "BIOES" if form == "conll-bioes" else "BIO")
        written = sum(1 for e in examples if e.spans is not None and e.text)
    elif form == "text":
        bad = next((n for n, e in enumerate(examples, 1) if "\n" in e.text or "\r" in e.text), None)
        if bad is not None:
            raise DataError(f"text {bad} holds a line break, which a file of one text a line cannot hold")
        content, written = "".join(f"{e.text}\n" for e in examples), len(examples)
    else:
        writers: dict[str, Any] = {"cluener": cluener_records, "spans": spans_records, "doccano": doccano_records}
        records = writers[form](examples)
        content, written = json_lines(records), len(records)
    io.write_text(path, content)
    return written, dropped


def convert(source: Path, target: Path, source_format: str, target_format: str, on_error: str = "raise",
            text_field: str = "text") -> Conversion:  # fmt: skip
    """Read `source` (`source_format`, or "auto": see `detect_format`) and write `target`."""
    if source_format == "auto":
        if not source.is_file():
            raise DataError(f"convert: file not found: {source}")
        source_format = detect_format(source)
    if source_format not in FORMATS or target_format not in FORMATS:
        raise DataError(f"convert: formats are {', '.join(FORMATS)}")
    report = Reporter(on_error)
    examples = read_corpus(source, source_format, report, text_field)
    result = Conversion(source_format, texts=len(examples), skipped=report.skipped)
    result.labelled = sum(e.spans is not None for e in examples)
    result.spans = sum(len(e.spans or ()) for e in examples)
    result.written, result.dropped = write_corpus(target, examples, target_format, text_field)
    return result
