"""`ner.v1`: character-level BIO tagging whose offsets index the original text exactly.

Each character is one token (the encoder maps it to one id), so a tag index is a character
offset: spans come back as `text[start:end]` whatever the text holds (Latin words, digit
runs, spaces, full-width characters, emoji). Tags are read strictly (IOB2): an entity starts
at `B-X` and continues over `I-X`; a stray `I-X` starts nothing. This is exactly seqeval's
strict IOB2 mode, so exact-span scores and seqeval's agree.

Flat BIO cannot hold nested entities: where gold spans overlap, the longer one is tagged and
the other is dropped and counted (CLUENER train has one such pair, a company inside a book
title).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Encoder, Example, Span, Task


class NerConfig(Config):
    scheme: Literal["BIO"] = "BIO"


class NerTask(Task):
    """Named-entity recognition as one BIO tag per character."""

    config_model = NerConfig

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

    def tags(self, length: int, spans: Sequence[Span]) -> list[str]:
        """BIO tag names for a text of `length` characters (spans must not overlap)."""
        tags = ["O"] * length
        for span in spans:
            tags[span.start] = f"B-{span.label}"
            for i in range(span.start + 1, span.end):
                tags[i] = f"I-{span.label}"
        return tags

    def encode(self, example: Example, encoder: Encoder) -> dict[str, Any]:
        ids = encoder.char_ids(example.text)
        if len(ids) != len(example.text):
            raise ValueError(
                f"encoder {type(encoder).__name__} gave {len(ids)} ids for "
                f"{len(example.text)} characters; encoders must give one id per character"
            )
        feature: dict[str, Any] = {"input_ids": ids, "dropped": []}
        if example.spans is not None:
            kept, feature["dropped"] = self.flat_spans(example.spans)
            tags = self.tags(len(example.text), kept)
            feature["tags"] = [self._index[t] for t in tags]
        limit = encoder.max_chars
        feature["truncated"] = limit is not None and len(ids) > limit
        if feature["truncated"]:
            feature["input_ids"] = ids[:limit]
            if "tags" in feature:
                feature["tags"] = feature["tags"][:limit]
        return feature

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), width, dtype=torch.long)
        mask = torch.zeros(len(features), width, dtype=torch.bool)
        has_tags = all("tags" in f for f in features)
        tags = torch.zeros(len(features), width, dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.tensor(feature["input_ids"], dtype=torch.long)
            mask[row, :n] = True
            if has_tags:
                tags[row, :n] = torch.tensor(feature["tags"], dtype=torch.long)
        batch = {"input_ids": ids, "mask": mask}
        if has_tags:
            batch["tags"] = tags
        return batch

    def spans(self, text: str, tag_ids: Sequence[int]) -> list[Span]:
        return spans_from_tags([self._labels[i] for i in tag_ids])


def spans_from_tags(tags: Sequence[str]) -> list[Span]:
    """Strict IOB2 reading of tag names: `B-X I-X*` is an entity; anything else starts none."""
    spans: list[Span] = []
    start, label = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and start >= 0 and kind == label:
            continue
        if start >= 0:
            spans.append(Span(start, i, label))
            start = -1
        if prefix == "B":
            start, label = i, kind
    return spans


@hookimpl
def register_tasks(register):
    register("ner.v1", NerTask)
