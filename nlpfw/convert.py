"""`nlpfw convert IN OUT`: a corpus from one format to another.

The core knows no format but `text` (one text a line, unlabelled). Every other format is
read and written by a dataset component that declares it (through the registry, never by
importing a plugin): its class attribute `file_formats` maps the format names it reads and
writes to the options its `write_file` takes for each; the class methods `read_file(path, bad)`
read a whole file (texts without labels have `gold` None), `write_file(examples, **options)`
write one (the text, how many texts it holds, notes on what the format could not hold) and
`detect_format(path, first_line)` recognises a file of one of its formats from its first
non-blank line (None: not one of them). Keyword options of `read_file` and `write_file` beyond
those are the user's (`--option KEY=VALUE`, and `--text-field`), passed to whichever of the two
takes them. The built-in formats: for entity spans `cluener` and `spans` (`jsonl_spans.v1`),
`conll` and `conll-bioes` (`conll.v1`); for classes `text-labels`, `text-labels-csv` and
`text-labels-tsv` (`text_labels.v1`); for either `label-studio` (`label_studio.v1`) and
`doccano` (`doccano.v1`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlpfw import io
from nlpfw.errors import DataError
from nlpfw.interfaces import Example

TEXT = "text"  # the core's own format: one text a line


@dataclass
class Conversion:
    """What a conversion read and wrote, for the command's summary."""

    source_format: str
    texts: int = 0
    labelled: int = 0
    annotations: int = 0
    written: int = 0
    notes: list[str] = field(default_factory=list)  # what the target format could not hold
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


def file_formats(registry: Any) -> dict[str, tuple[type, dict[str, Any]]]:
    """Every format the registered datasets read and write: name -> (class, write_file options)."""
    formats: dict[str, tuple[type, dict[str, Any]]] = {}
    for name in registry.names("dataset"):
        cls = registry.get("dataset", name).cls
        for form, options in getattr(cls, "file_formats", {}).items():
            formats.setdefault(form, (cls, dict(options)))
    return formats


def format_names(registry: Any) -> list[str]:
    return [*file_formats(registry), TEXT]


def detect_format(path: Path, registry: Any) -> str:
    """A file's format from its first non-blank line, as the first dataset that recognises it
    says (`detect_format`); `text` when none does."""
    with path.open(encoding="utf-8") as stream:
        first = next((line for line in stream if line.strip()), "")
    for cls in dict.fromkeys(cls for cls, _ in file_formats(registry).values()):
        detect = getattr(cls, "detect_format", None)
        form = detect(path, first) if detect is not None else None
        if form is not None:
            return form
    return TEXT


def _taken(method: Any, options: dict[str, Any], skip: int) -> dict[str, Any]:
    """The `options` that `method` takes as keywords (after its first `skip` parameters)."""
    names = list(inspect.signature(method).parameters)[skip:]
    return {key: value for key, value in options.items() if key in names}


def option_names(method: Any, skip: int, fixed: dict[str, Any] | None = None) -> list[str]:
    """The keyword options `method` takes: its parameters after the first `skip`, less `fixed`."""
    return [name for name in list(inspect.signature(method).parameters)[skip:] if name not in (fixed or {})]


def check_options(options: dict[str, str], source_format: str, target_format: str, registry: Any) -> None:
    """An error naming each `--option` key that neither the reader of `source_format` nor the
    writer of `target_format` takes, with the keys they do take."""
    formats = file_formats(registry)
    takes: list[str] = []
    if source_format in formats:
        takes += option_names(formats[source_format][0].read_file, 2)
    if target_format in formats:
        cls, fixed = formats[target_format]
        takes += option_names(cls.write_file, 1, fixed)
    takes = list(dict.fromkeys(takes))
    for key in options:
        if key not in takes:
            raise DataError(f"convert: --option {key}: the {source_format} reader and the {target_format} writer take no such "
                            f"option; they take: {', '.join(takes) or 'none'}")  # fmt: skip


def _known(form: str, formats: dict[str, Any]) -> None:
    if form != TEXT and form not in formats:
        raise DataError(f"convert: unknown format {form!r}; formats: {', '.join([*formats, TEXT])}")


def read_corpus(path: Path, form: str, report: Reporter, registry: Any, text_field: str = "text",
                options: dict[str, str] | None = None) -> list[Example]:  # fmt: skip
    """Every text of `path` in format `form` (labelled or not), in file order; `options`: the
    reader's keyword options (those it does not take are ignored)."""
    if not path.is_file():
        raise DataError(f"convert: file not found: {path}")
    if form == TEXT:
        with path.open(encoding="utf-8", newline="") as stream:
            return [Example(line.rstrip("\r\n")) for line in stream]
    formats = file_formats(registry)
    _known(form, formats)
    reader = formats[form][0]
    return reader.read_file(path, report, **_taken(reader.read_file, {"text_field": text_field, **(options or {})}, 2))


def write_corpus(path: Path, examples: Sequence[Example], form: str, registry: Any, text_field: str = "text",
                 options: dict[str, str] | None = None) -> tuple[int, list[str]]:  # fmt: skip
    """Write `examples` to `path` in format `form`; (texts written, notes on what was left out)."""
    if form == TEXT:
        bad = next((n for n, e in enumerate(examples, 1) if "\n" in e.text or "\r" in e.text), None)
        if bad is not None:
            raise DataError(f"text {bad} holds a line break, which a file of one text a line cannot hold")
        io.write_text(path, "".join(f"{e.text}\n" for e in examples))
        return len(examples), []
    formats = file_formats(registry)
    _known(form, formats)
    writer, fixed = formats[form]
    given = {k: v for k, v in {"text_field": text_field, **(options or {})}.items() if k not in fixed}
    content, written, notes = writer.write_file(examples, **fixed, **_taken(writer.write_file, given, 1))
    io.write_text(path, content)
    return written, list(notes)


def convert(source: Path, target: Path, source_format: str, target_format: str, registry: Any,
            on_error: str = "raise", text_field: str = "text", options: dict[str, str] | None = None) -> Conversion:  # fmt: skip
    """Read `source` (`source_format`, or "auto": see `detect_format`) and write `target`;
    `options` go to the reader and the writer that take them (`check_options`)."""
    formats = file_formats(registry)
    _known(target_format, formats)
    if source_format == "auto":
        if not source.is_file():
            raise DataError(f"convert: file not found: {source}")
        source_format = detect_format(source, registry)
    _known(source_format, formats)
    check_options(options or {}, source_format, target_format, registry)
    report = Reporter(on_error)
    examples = read_corpus(source, source_format, report, registry, text_field, options)
    result = Conversion(source_format, texts=len(examples), skipped=report.skipped)
    result.labelled = sum(e.gold is not None for e in examples)
    result.annotations = sum(len(e.gold) if isinstance(e.gold, (list, tuple)) else e.gold is not None for e in examples)
    result.written, result.notes = write_corpus(target, examples, target_format, registry, text_field, options)
    return result
