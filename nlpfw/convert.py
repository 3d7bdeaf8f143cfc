"""`nlpfw convert IN OUT`: a corpus from one format to another.

Each format is read and written by the dataset component that reads it (its `read_file` and
`write_file` class methods), found through the registry: `cluener` and `spans` by
`jsonl_spans.v1`, `conll` and `conll-bioes` by `conll.v1`, `label-studio` by `label_studio.v1`,
`doccano` by `doccano.v1`; `text` (one text a line) is read and written here. Every span is
kept, overlapping ones too, since a converter should lose nothing it can write; texts without
labels (a Label Studio task nobody annotated, a plain text) stay unlabelled where the target
can say so, and are left out of CoNLL, which cannot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlpfw import io
from nlpfw.errors import DataError
from nlpfw.interfaces import Example

FORMATS = ("cluener", "spans", "conll", "conll-bioes", "label-studio", "doccano", "text")
DATASETS = {  # format: (the dataset component that reads and writes it, its write_file options)
    "cluener": ("jsonl_spans.v1", {"form": "cluener"}),
    "spans": ("jsonl_spans.v1", {"form": "spans"}),
    "conll": ("conll.v1", {"scheme": "BIO"}),
    "conll-bioes": ("conll.v1", {"scheme": "BIOES"}),
    "label-studio": ("label_studio.v1", {}),
    "doccano": ("doccano.v1", {}),
}
SPAN_KEYS = ("label", "labels", "entities")


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


def detect_format(path: Path) -> str:
    """A file's format from its first record: `[` a Label Studio export; a JSON line by its keys
    (`label` an object: CLUENER; `label`/`labels` a list or `entities`: doccano; else spans);
    `TOKEN<tab or spaces>TAG`: CoNLL (BIOES if any E-/S- tag); anything else: plain texts."""
    with path.open(encoding="utf-8") as stream:
        first = next((line for line in stream if line.strip()), "")
    stripped = first.strip()
    if stripped.startswith("["):
        return "label-studio"
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError:
            return "label-studio"  # a pretty-printed single task
        if isinstance(record.get("label"), dict):
            return "cluener"
        if any(isinstance(record.get(k), list) for k in SPAN_KEYS):
            return "doccano"
        return "spans"
    columns = first.rstrip("\n").split("\t") if "\t" in first else first.split()
    if len(columns) >= 2 and (columns[-1] == "O" or columns[-1][:2] in {f"{p}{s}" for p in "BIES" for s in "-_"}):
        with path.open(encoding="utf-8") as stream:
            tags = (line.rstrip().rsplit(maxsplit=1)[-1][:2] for line in stream if line.strip())
            return "conll-bioes" if any(t in ("E-", "S-", "E_", "S_") for t in tags) else "conll"
    return "text"


def read_corpus(path: Path, form: str, report: Reporter, registry: Any, text_field: str = "text") -> list[Example]:
    """Every text of `path` in format `form` (labelled or not), in file order."""
    if not path.is_file():
        raise DataError(f"convert: file not found: {path}")
    if form == "text":
        with path.open(encoding="utf-8", newline="") as stream:
            return [Example(line.rstrip("\r\n")) for line in stream]
    reader = registry.get("dataset", DATASETS[form][0]).cls
    options = {"text_field": text_field} if form == "label-studio" else {}
    return reader.read_file(path, report, **options)


def write_corpus(path: Path, examples: Sequence[Example], form: str, registry: Any, text_field: str = "text") -> tuple[int, int]:
    """Write `examples` to `path` in format `form`; (texts written, spans left out)."""
    if form == "text":
        bad = next((n for n, e in enumerate(examples, 1) if "\n" in e.text or "\r" in e.text), None)
        if bad is not None:
            raise DataError(f"text {bad} holds a line break, which a file of one text a line cannot hold")
        io.write_text(path, "".join(f"{e.text}\n" for e in examples))
        return len(examples), 0
    name, options = DATASETS[form]
    options = {**options, "text_field": text_field} if form == "label-studio" else options
    content, dropped = registry.get("dataset", name).cls.write_file(examples, **options)
    io.write_text(path, content)
    whole = [e for e in examples if e.gold is not None and e.text] if form.startswith("conll") else examples
    return len(whole), dropped


def convert(source: Path, target: Path, source_format: str, target_format: str, registry: Any,
            on_error: str = "raise", text_field: str = "text") -> Conversion:  # fmt: skip
    """Read `source` (`source_format`, or "auto": see `detect_format`) and write `target`."""
    if source_format == "auto":
        if not source.is_file():
            raise DataError(f"convert: file not found: {source}")
        source_format = detect_format(source)
    report = Reporter(on_error)
    examples = read_corpus(source, source_format, report, registry, text_field)
    result = Conversion(source_format, texts=len(examples), skipped=report.skipped)
    result.labelled = sum(e.gold is not None for e in examples)
    result.spans = sum(len(e.gold or ()) for e in examples)
    result.written, result.dropped = write_corpus(target, examples, target_format, registry, text_field)
    return result
