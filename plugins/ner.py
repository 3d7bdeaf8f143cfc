"""`ner.v1`: character-level BIO tagging whose offsets index the original text exactly.

Each character is one token (the encoder maps it to one id), so a tag index is a character
offset: spans come back as `text[start:end]` whatever the text holds (Latin words, digit
runs, spaces, full-width characters, emoji).

The model is always trained on clean BIO tags derived from the gold spans. How predicted tags
are read back is the `scoring` option (see `nlpfw.tags`): `strict` (IOB2: an entity starts at
`B-X`; a stray `I-X` starts nothing, so exact-span scores equal seqeval's strict mode) or
`conlleval` (an `I-X` after `O` or another type starts an entity, seqeval's default mode, as
the People's Daily reference scores).

Flat BIO cannot hold nested entities: where gold spans overlap, the longer one is tagged and
the other is dropped and counted (CLUENER train has one such pair, a company inside a book
title). Span decoders (target "spans") learn from every gold span, nested ones included: the
task gives them all in its `spans` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Encoder, Example, Span, Task
from nlpfw.tags import Mode, read_spans


class NerConfig(Config):
    scheme: Literal["BIO"] = "BIO"
    scoring: Mode = Field(
        default="strict", description="how predicted tags are read: strict (IOB2) or conlleval"
    )


class NerTask(Task):
    """Named-entity recognition as one BIO tag per character."""

    config_model = NerConfig
    config: NerConfig
    targets = ("tags", "spans")

    def __init__(self, config: NerConfig, entity_types: Sequence[str]):
        super().__init__(config, entity_types)
        self._labels = ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]
        self._index = {label: i for i, label in enumerate(self._labels)}

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def flat_spans(self, spans: Sequence[Span]) -> tuple[list[Span], list[Span]]:
        """Split `spans` into those BIO can hold (longest first wins) and the dropped rest."""
        kept: list[Span] = []
        dropped: list[Span] = []
        for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start, s.label)):
            if any(span.start < k.end and k.start < span.end for k in kept):
                dropped.append(span)
            else:
                kept.append(span)
        return sorted(kept), dropped

    def tag_ids(self, length: int, spans: Sequence[Span]) -> np.ndarray:
        """BIO tag ids for a text of `length` characters (spans must not overlap)."""
        tags = np.zeros(length, dtype=np.int16)
        for span in spans:
            tags[span.start] = self._index[f"B-{span.label}"]
            tags[span.start + 1 : span.end] = self._index[f"I-{span.label}"]
        return tags

    def encode(self, example: Example, encoder: Encoder) -> dict[str, Any]:
        ids = np.asarray(encoder.char_ids(example.text), dtype=np.int32)
        if len(ids) != len(example.text):
            raise ValueError(
                f"encoder {type(encoder).__name__} gave {len(ids)} ids for "
                f"{len(example.text)} characters; encoders must give one id per character"
            )
        feature: dict[str, Any] = {"input_ids": ids, "dropped": []}
        if example.spans is not None:
            unknown = {s.label for s in example.spans} - set(self.entity_types)
            if unknown:
                raise ValueError(f"entity types {sorted(unknown)} are not among the task's {self.entity_types}")
            kept, feature["dropped"] = self.flat_spans(example.spans)
            feature["tags"] = self.tag_ids(len(example.text), kept)
            feature["spans"] = self.span_table(example.spans)
        return feature

    def span_table(self, spans: Sequence[Span]) -> np.ndarray:
        """Every gold span (nested ones too, each once) as (start, end, entity type id) rows."""
        index = {t: i for i, t in enumerate(self.entity_types)}
        rows = sorted({(s.start, s.end, index[s.label]) for s in spans})
        return np.asarray(rows, dtype=np.int32).reshape(-1, 3)

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        lengths = torch.tensor([len(f["input_ids"]) for f in features])
        mask = torch.arange(width) < lengths.unsqueeze(1)
        batch = {"input_ids": _pad([f["input_ids"] for f in features], width), "mask": mask}
        if all("tags" in f for f in features):
            batch["tags"] = _pad([f["tags"] for f in features], width)
        if all("spans" in f for f in features):
            batch["spans"] = _span_rows([f["spans"] for f in features])
        return batch

    def spans(self, text: str, tag_ids: Sequence[int]) -> list[Span]:
        return read_spans([self._labels[i] for i in tag_ids], self.config.scoring)


def _pad(rows: Sequence[Any], width: int) -> torch.Tensor:
    """Rows of ids as one [len(rows), width] long tensor, zero-padded on the right."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _span_rows(tables: Sequence[np.ndarray]) -> torch.Tensor:
    """Each window's (start, end, label) rows, prefixed by the window's row in the batch: [k, 4]."""
    rows = [np.column_stack([np.full(len(t), i), t]) for i, t in enumerate(tables)]
    return torch.from_numpy(np.concatenate(rows).astype(np.int64).reshape(-1, 4))


def spans_from_tags(tags: Sequence[str]) -> list[Span]:
    """Strict IOB2 reading of tag names: `B-X I-X*` is an entity; anything else starts none."""
    return read_spans(tags, "strict")


@hookimpl
def register_tasks(register):
    register("ner.v1", NerTask)
