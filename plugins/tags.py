"""Reading entity spans out of tag sequences (BIO and BIOES), in two modes.

`strict` (IOB2/IOBES, seqeval's `mode="strict"`): an entity is `B-X I-X*` (BIO) or
`B-X I-X* E-X` / `S-X` (BIOES); a tag that does not continue a well-formed entity starts
nothing, so an ill-formed prediction scores as missed.

`conlleval` (seqeval's default mode, the conlleval script's rules): an entity also starts at an
`I-X` (or `E-X`) that follows `O`, the end of an entity, or a tag of another type, and ends where
the next tag does not continue it. This is how corpora such as People's Daily 2014, whose
entities sometimes start with `I-`, are meant to be read, and it is how datasets read gold tags,
so no labelled entity is lost.

Tags are `PREFIX-TYPE` (the dataset normalises spellings such as `B_LOC` first) or `O`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from nlpfw.interfaces import Span

Mode = Literal["strict", "conlleval"]
Scheme = Literal["BIO", "BIOES"]
PREFIXES: dict[str, str] = {"BIO": "BI", "BIOES": "BIES"}


class TagError(ValueError):
    """A tag that is not `O` or `PREFIX-TYPE` with a prefix of the scheme."""


def split_tag(tag: str, scheme: Scheme = "BIO") -> tuple[str, str]:
    """`B-LOC` -> (`B`, `LOC`); `O` -> (`O`, ``). Raises `TagError` on anything else."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if not dash or not kind or prefix not in PREFIXES[scheme]:
        allowed = "/".join(PREFIXES[scheme])
        raise TagError(f"unknown tag {tag!r}: expected 'O' or {allowed}-TYPE ({scheme})")
    return prefix, kind


def detect_scheme(tags: Sequence[str]) -> Scheme:
    """BIOES if any tag starts with `E-` or `S-`, else BIO."""
    return "BIOES" if any(t[:2] in ("E-", "S-") for t in tags) else "BIO"


def read_spans(tags: Sequence[str], mode: Mode = "strict", scheme: Scheme = "BIO") -> list[Span]:
    """Entity spans (end exclusive) of a tag sequence; raises `TagError` on an unknown tag."""
    known = _KNOWN[scheme]
    lenient = mode == "conlleval"
    keep_open = lenient or scheme == "BIO"  # strict BIOES: an entity left without its E- is ill-formed
    spans: list[Span] = []
    start, kind = -1, ""  # the open entity, if start >= 0
    for i, tag in enumerate(tags):
        if tag == "O":  # the common case first
            if start >= 0:
                if keep_open:
                    spans.append(Span(start, i, kind))
                start = -1
            continue
        parsed = known.get(tag)
        if parsed is None:
            parsed = known[tag] = split_tag(tag, scheme)
        prefix, label = parsed
        if start >= 0 and label == kind and (prefix == "I" or prefix == "E"):
            if prefix == "E":
                spans.append(Span(start, i + 1, kind))
                start = -1
            continue
        if start >= 0:  # the open entity is not continued
            if keep_open:
                spans.append(Span(start, i, kind))
            start = -1
        if prefix == "S" or (prefix == "E" and lenient):
            spans.append(Span(i, i + 1, label))
        elif prefix == "B" or (prefix == "I" and lenient):
            start, kind = i, label
    if start >= 0 and keep_open:
        spans.append(Span(start, len(tags), kind))
    return spans


_KNOWN: dict[str, dict[str, tuple[str, str]]] = {scheme: {} for scheme in PREFIXES}  # tag -> split_tag(tag)


def tag_inventory(types: Sequence[str], scheme: Scheme = "BIO") -> list[str]:
    """The tag names of a scheme for `types`, in id order: `O`, then each type's tags
    (`B-X I-X`, or `B-X I-X E-X S-X` for BIOES)."""
    return ["O"] + [f"{p}-{t}" for t in types for p in PREFIXES[scheme]]


def write_tags(length: int, spans: Sequence[Span], scheme: Scheme = "BIO") -> list[str]:
    """Tag names for a text of `length` characters (spans must not overlap, nor be empty):
    BIO, `B-X I-X*`; or BIOES, `S-X` for a one-character entity and `B-X I-X* E-X` for a
    longer one. `read_spans` of the result in either mode gives `spans` back."""
    tags = ["O"] * length
    for span in spans:
        if scheme == "BIOES" and span.end - span.start == 1:
            tags[span.start] = f"S-{span.label}"
            continue
        tags[span.start] = f"B-{span.label}"
        for i in range(span.start + 1, span.end):
            tags[i] = f"I-{span.label}"
        if scheme == "BIOES":
            tags[span.end - 1] = f"E-{span.label}"
    return tags


def bio_tags(length: int, spans: Sequence[Span]) -> list[str]:
    """BIO tag names for a text of `length` characters (spans must not overlap)."""
    return write_tags(length, spans, "BIO")
