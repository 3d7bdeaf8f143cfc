"""`conll.v1`: one token and its tag per line, a blank line between sentences.

Columns are separated by a tab or by spaces; the token is the first column and the tag the
last, so CoNLL-2003's four-column files read as they are. `-DOCSTART-` lines are ignored. Tags
are BIO or BIOES (`B_LOC` is read as `B-LOC`), and gold tags are read conlleval-style: an
entity that starts with `I-` (or `E-`) is kept as an entity, not lost (see `gold_spans`).

A sentence's text is its tokens joined by `separator` ("" for one character per line, " " for
English words); span offsets are character offsets into that text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from nlpfw import textfile
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Example, Span
from nlpfw_plugins.formats import Bad, conll_text, require_spans, write_notes
from nlpfw_plugins.tags import Scheme, TagError, detect_scheme, read_spans, split_tag
from nlpfw_plugins.splitfiles import SplitFilesConfig, SplitFilesDataset, unknown_type

DOCSTART = "-DOCSTART-"
COLUMNS = "a token and its tag separated by a tab or spaces"


class TagProblem(ValueError):
    """A bad tag in a sentence; `index` is the token it is at."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def normalise_tag(tag: str) -> str:
    """`B_LOC` -> `B-LOC`; only the prefix's separator changes (`B_WORK_OF_ART` -> `B-WORK_OF_ART`)."""
    return f"{tag[0]}-{tag[2:]}" if tag[1:2] == "_" else tag


def gold_spans(tags: Sequence[str], scheme: Scheme, entity_types: Sequence[str] | None = None) -> list[Span]:
    """Entity spans (token offsets, end exclusive) of one sentence's gold tags.

    Read conlleval-style, so an entity that starts with `I-` is kept. Raises `TagProblem` at
    the first unknown tag, or at the first entity whose type is not in `entity_types` (if given).
    """
    try:
        spans = read_spans(tags, mode="conlleval", scheme=scheme)
    except TagError:
        for index, tag in enumerate(tags):  # only on error: find where it is
            try:
                split_tag(tag, scheme)
            except TagError as error:
                raise TagProblem(index, str(error)) from None
        raise
    if entity_types is not None:
        for span in spans:
            if span.label not in entity_types:
                raise TagProblem(span.start, unknown_type(span.label, entity_types))
    return spans


class ConllConfig(SplitFilesConfig):
    train: str = Field(default="train.txt", description="file of the train split, in `path`")
    dev: str = Field(default="dev.txt", description="file of the dev split, in `path`")
    scheme: Literal["auto", "BIO", "BIOES"] = Field(
        default="auto", description="tagging scheme of the files (auto: BIOES if any E- or S- tag, else BIO)"
    )
    separator: str = Field(default="", description="joins a sentence's tokens into its text")

    @field_validator("scheme", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:  # "bioes" as ner.v1's scheme takes it
        return value.upper() if isinstance(value, str) and value.lower() != "auto" else value


class Conll(SplitFilesDataset):
    """A CoNLL-style corpus: `train.txt`, `dev.txt` (and an optional test file) in one folder."""

    config_model = ConllConfig
    config: ConllConfig
    name = "conll.v1"
    file_formats = {"conll": {"scheme": "BIO"}, "conll-bioes": {"scheme": "BIOES"}}  # nlpfw convert's: write_file options

    def read(self, path: Path, split: str, entity_types: Sequence[str] | None) -> list[Example]:
        examples: list[Example] = []
        for tokens, tags, lines in self.sentences(path):
            if self.full(examples):
                break
            # Per sentence, "auto" reads exactly as per file would: in conlleval mode a sentence
            # with no E-/S- tag gives the same spans under BIO and BIOES.
            scheme = detect_scheme(tags) if self.config.scheme == "auto" else self.config.scheme
            try:
                spans = gold_spans(tags, scheme, entity_types)
            except TagProblem as problem:
                self.bad_data(f"{path}:{lines[problem.index]}", str(problem), self.config.on_error)
                continue
            examples.append(self.example(tokens, spans, lines[0]))
        return examples

    def sentences(self, path: Path) -> Iterator[tuple[list[str], list[str], list[int]]]:
        """(tokens, normalised tags, line numbers) of each well-formed sentence of `path`."""
        tokens: list[str] = []
        tags: list[str] = []
        lines: list[int] = []
        bad = False
        with textfile.open_text(path, lambda where, message: self.bad_data(where, message, self.config.on_error),
                                keep_bad=True) as file:  # fmt: skip
            for number, line in file:
                if line is None:  # not UTF-8, and skipped: the sentence is left out
                    bad = True
                    continue
                columns = line.split("\t") if "\t" in line else line.split()
                if not line.strip() or columns[0].strip() == DOCSTART:
                    if tokens and not bad:
                        yield tokens, tags, lines
                    tokens, tags, lines, bad = [], [], [], False
                    continue
                # a tab-separated token may be a space character (Chinese text holds spaces)
                token = columns[0] if columns[0].isspace() else columns[0].strip()
                tag = columns[-1].strip() if len(columns) > 1 else ""
                if not token or not tag:
                    what = "empty token" if not token else f"no tag: expected {COLUMNS}"
                    self.bad_data(f"{path}:{number}", f"{what}, found {line!r}", self.config.on_error)
                    bad = True
                tokens.append(token)
                tags.append(normalise_tag(tag))
                lines.append(number)
        if tokens and not bad:
            yield tokens, tags, lines

    def example(self, tokens: list[str], spans: list[Span], line: int) -> Example:
        """The sentence's text and its spans in character offsets; `id` is its first line."""
        separator = self.config.separator
        text = separator.join(tokens)
        if len(text) == len(tokens):  # one character per token: offsets are token indices
            return Example(text, spans, line)
        starts = []
        position = 0
        for token in tokens:
            starts.append(position)
            position += len(token) + len(separator)
        spans = [Span(starts[s.start], starts[s.end - 1] + len(tokens[s.end - 1]), s.label) for s in spans]
        return Example(text, spans, line)

    @classmethod
    def read_file(cls, path: Path, bad: Bad) -> list[Example]:
        """Every sentence of one file (BIO or BIOES), bad data through `bad`, for `nlpfw convert`."""
        dataset = cls(cls.config_model(path=str(path.parent)), path.parent)
        dataset.bad_data = lambda where, message, on_error="raise": bad(where, message)  # type: ignore[method-assign]
        return dataset.read(path, "train", None)

    @classmethod
    def write_file(cls, examples: Sequence[Example], scheme: Scheme = "BIO") -> tuple[str, int, list[str]]:
        """(a character and its tag a line; the labelled texts written; notes on the spans
        overlapping a longer one and the texts without labels, which CoNLL cannot hold)."""
        require_spans(examples, "conll" if scheme == "BIO" else "conll-bioes")
        content, dropped = conll_text(examples, scheme)
        written = sum(e.gold is not None and bool(e.text) for e in examples)
        return content, written, write_notes(examples, written, dropped)

    @classmethod
    def detect_format(cls, path: Path, first: str) -> str | None:
        """`TOKEN<tab or spaces>TAG` on the first line: `conll`, or `conll-bioes` if any E-/S- tag."""
        columns = first.rstrip("\n").split("\t") if "\t" in first else first.split()
        if len(columns) < 2 or not (columns[-1] == "O" or columns[-1][:2] in {f"{p}{s}" for p in "BIES" for s in "-_"}):
            return None
        with path.open(encoding="utf-8") as stream:
            tags = (line.rstrip().rsplit(maxsplit=1)[-1][:2] for line in stream if line.strip())
            return "conll-bioes" if any(t in ("E-", "S-", "E_", "S_") for t in tags) else "conll"


@hookimpl
def register_datasets(register):
    register("conll.v1", Conll)
