"""`ner.v1`: character-level BIO or BIOES tagging whose offsets index the original text exactly.

Each character is one token (the encoder maps it to one id), so a tag index is a character
offset: spans come back as `text[start:end]` whatever the text holds (Latin words, digit
runs, spaces, full-width characters, emoji).

The model is always trained on clean tags derived from the gold spans, in the `scheme` of the
task: `BIO` (`B-X I-X*`, the default) or `BIOES` (`S-X` for a one-character entity, `B-X I-X*
E-X` for a longer one). The tag names, and so the decoder's labels, follow the scheme; a model
folder keeps both (its recipe and `labels.json`), so a loaded model reads its tags as it was
trained. How predicted tags are read back is the `scoring` option (see `nlpfw_plugins.tags`):
`strict` (IOB2/IOBES: an entity starts at `B-X` and, under BIOES, is closed by `E-X` or is an
`S-X`; a stray or unfinished tag starts nothing, so exact-span scores equal seqeval's strict
mode) or `conlleval` (an `I-X` after `O` or another type starts an entity, seqeval's default
mode, as the People's Daily reference scores). Scores are exact-span precision, recall and F1, overall
and per entity type (`nlpfw_plugins.span_metrics`); the main score is the overall F1.

Flat BIO cannot hold nested entities: where gold spans overlap, the longer one is tagged and
the other is dropped and counted (CLUENER train has one such pair, a company inside a book
title). Span decoders (target "spans") learn from every gold span, nested ones included: the
task gives them all in its `spans` table.

A gold annotation is a list of `Span`s; a prediction too. Long texts are windowed by the core;
the task keeps each window's entities that start in the characters the window owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Config, Encoded, Encoder, Evaluation, Example, Span, Task, Window, input_ids
from nlpfw_plugins.span_metrics import score_spans
from nlpfw_plugins.tags import Mode, Scheme, read_spans, tag_inventory

METRIC_NOTES = {
    "strict": "strict entity-level matching: exact (type, start, end) spans, as seqeval's strict IOB2 mode",
    "conlleval": "entity-level matching of exact (type, start, end) spans, predicted tags read as conlleval "
    "does (an I-X after O starts an entity), as seqeval's default mode",
}


class NerConfig(Config):
    scheme: Scheme = Field(
        default="BIO", description='the tags the model learns: "BIO", or "BIOES" (S-X single characters, E-X entity ends); any case'
    )
    scoring: Mode = Field(
        default="strict", description="how predicted tags are read: strict (IOB2/IOBES) or conlleval"
    )

    @field_validator("scheme", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class NerTask(Task):
    """Named-entity recognition: entity spans, learned as one BIO or BIOES tag per character
    (target `tags`) or as a span table (target `spans`)."""

    config_model = NerConfig
    config: NerConfig
    label_kind = "entity"

    def __init__(self, config: NerConfig, labels: Sequence[str]):
        super().__init__(config, labels)
        self.tags = tag_inventory(self.labels, config.scheme)
        self._index = {tag: i for i, tag in enumerate(self.tags)}

    @property
    def entity_types(self) -> list[str]:
        """The entity types (the task's label inventory)."""
        return self.labels

    def targets(self) -> tuple[str, ...]:
        return ("tags", "spans")

    def target_labels(self, target: str) -> list[str]:
        """Tag names for `tags`; entity types for `spans`."""
        return list(self.tags) if target == "tags" else list(self.labels)

    def flat_spans(self, spans: Sequence[Span]) -> tuple[list[Span], list[Span]]:
        """Split `spans` into those flat tags can hold (longest first wins) and the dropped rest."""
        kept: list[Span] = []
        dropped: list[Span] = []
        for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start, s.label)):
            if any(span.start < k.end and k.start < span.end for k in kept):
                dropped.append(span)
            else:
                kept.append(span)
        return sorted(kept), dropped

    def tag_ids(self, length: int, spans: Sequence[Span]) -> np.ndarray:
        """Tag ids of the scheme for a text of `length` characters (spans must not overlap)."""
        tags = np.zeros(length, dtype=np.int16)
        bioes = self.config.scheme == "BIOES"
        for span in spans:
            if bioes and span.end - span.start == 1:
                tags[span.start] = self._index[f"S-{span.label}"]
                continue
            tags[span.start] = self._index[f"B-{span.label}"]
            tags[span.start + 1 : span.end] = self._index[f"I-{span.label}"]
            if bioes:
                tags[span.end - 1] = self._index[f"E-{span.label}"]
        return tags

    def encode(self, example: Example, encoder: Encoder) -> Encoded:
        encoded = Encoded(columns={"input_ids": input_ids(encoder, example.text)})
        if example.gold is not None:
            unknown = {s.label for s in example.gold} - set(self.labels)
            if unknown:
                raise ValueError(f"entity types {sorted(unknown)} are not among the task's {self.labels}")
            kept, dropped = self.flat_spans(example.gold)
            encoded.columns["tags"] = self.tag_ids(len(example.text), kept)
            encoded.tables["spans"] = self.span_table(example.gold)
            encoded.annotations, encoded.dropped = len(example.gold), len(dropped)
        return encoded

    def span_table(self, spans: Sequence[Span]) -> np.ndarray:
        """Every gold span (nested ones too, each once) as (start, end, entity type id) rows."""
        index = {t: i for i, t in enumerate(self.labels)}
        rows = sorted({(s.start, s.end, index[s.label]) for s in spans})
        return np.asarray(rows, dtype=np.int32).reshape(-1, 3)

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        lengths = torch.tensor([len(f["input_ids"]) for f in features])
        mask = torch.arange(width) < lengths.unsqueeze(1)
        batch = {"input_ids": pad([f["input_ids"] for f in features], width), "mask": mask}
        if all("tags" in f for f in features):
            batch["tags"] = pad([f["tags"] for f in features], width)
        if all("spans" in f for f in features):
            batch["spans"] = _span_rows([f["spans"] for f in features])
        return batch

    def spans(self, text: str, tag_ids: Sequence[int]) -> list[Span]:
        """Spans of one text (or window) from its predicted tag ids (one per character)."""
        return read_spans([self.tags[i] for i in tag_ids], self.config.scoring, self.config.scheme)

    def window_spans(self, text: str, output: np.ndarray, target: str) -> list[Span]:
        """Spans of one window from a decoder's output for it: tag ids [chars] for `tags`, or
        (start, end, entity type id) rows [n, 3] for `spans`."""
        if target == "tags":
            return self.spans(text, output.tolist())
        return sorted(Span(int(s), int(e), self.labels[int(k)]) for s, e, k in output)

    def combine(self, text: str, windows: Sequence[Window], target: str) -> list[Span]:
        """The text's entities: each window's entities that start in characters it owns."""
        merged: list[Span] = []
        for window in windows:
            lo, hi = window.owned
            piece = text[window.start : window.start + window.length]
            merged.extend(
                Span(s.start + window.start, s.end + window.start, s.label)
                for s in self.window_spans(piece, window.output, target)
                if lo <= s.start + window.start < hi
            )
        return merged

    def score(self, gold: Sequence[Any], predicted: Sequence[Any]) -> Evaluation:
        """Exact-span precision, recall and F1, overall and per entity type; main: F1."""
        scores = score_spans(gold, predicted, self.labels).to_dict()
        summary = {key: scores["overall"][key] for key in ("precision", "recall", "f1")}
        per_type = {label: scores["by_type"][label] for label in scores["by_type"]}
        return Evaluation(
            main="f1", summary=summary, per_label={**per_type, "overall": scores["overall"]},
            details={**scores, "scoring": self.config.scoring, "scheme": self.config.scheme},
            note=METRIC_NOTES[self.config.scoring].replace("IOB2", "IOBES" if self.config.scheme == "BIOES" else "IOB2"),
            label_kind="entity",
        )  # fmt: skip

    def output(self, text: str, prediction: Sequence[Span]) -> dict[str, Any]:
        return {"entities": entity_records(text, prediction)}

    def confidence(
        self, text: str, prediction: Sequence[Span], windows: Sequence[Window], target: str
    ) -> tuple[dict[str, Any], float]:
        """The prediction's record fields with a `confidence` per entity, and the text's
        confidence, from `windows` holding a decoder's `confidence` output (the probability of
        the tag it chose at each character): each character's is taken from the window that
        owns it; an entity's is the lowest of its characters', the text's the lowest of all its
        characters' (1 for an empty text), so one doubtful character, inside an entity or just
        outside one, makes the text doubtful whatever its length."""
        per_char = np.ones(len(text), dtype=np.float64)
        for window in windows:
            lo, hi = window.owned
            per_char[lo:hi] = np.asarray(window.output, dtype=np.float64)[lo - window.start : hi - window.start]
        fields = self.output(text, prediction)
        for entity, span in zip(fields["entities"], prediction):
            entity["confidence"] = round(float(per_char[span.start : span.end].min()), CONFIDENCE_DIGITS)
        return fields, round(float(per_char.min()), CONFIDENCE_DIGITS) if len(text) else 1.0

    def gold_to_json(self, gold: Sequence[Span]) -> list[list[Any]]:
        return [[s.start, s.end, s.label] for s in gold]

    def gold_from_json(self, data: Sequence[Sequence[Any]]) -> list[Span]:
        return [Span(int(start), int(end), label) for start, end, label in data]

    def file_dataset(self, path: Path, dataset_type: str, dataset_config: Config) -> tuple[str, dict[str, Any]]:
        """JSON lines (`.json`, `.jsonl`; CLUENER form or start/end/label spans) through
        `jsonl_spans.v1`, anything else as CoNLL through `conll.v1`, with the model's types."""
        kind = "jsonl_spans.v1" if path.suffix.lower() in (".jsonl", ".json") else "conll.v1"
        return kind, {"path": str(path.parent.absolute()), "train": path.name, "dev": path.name, "entity_types": self.labels}

    def notes(self, stats: dict[str, Any], target: str) -> list[str]:
        train, dev = stats["train"].dropped, stats["dev"].dropped
        if target != "tags" or not (train or dev):
            return []
        return [
            f"[yellow]Note:[/] {train} train and {dev} dev span(s) overlap a longer one, which flat {self.config.scheme} tags "
            "cannot hold; the longer was kept for training, and dev is scored against all gold spans"
        ]


CONFIDENCE_DIGITS = 4


def entity_records(text: str, spans: Sequence[Span]) -> list[dict[str, Any]]:
    """JSON-ready entities of one text: `{"type", "text", "start", "end"}`, `text[start:end]`."""
    return [{"type": s.label, "text": text[s.start : s.end], "start": s.start, "end": s.end} for s in spans]


def pad(rows: Sequence[Any], width: int) -> torch.Tensor:
    """Rows of ids as one [len(rows), width] long tensor, zero-padded on the right; rows of
    [chars, k] arrays (an encoder's per-character rows) give [len(rows), width, k]."""
    out = np.zeros((len(rows), width, *np.shape(rows[0])[1:]), dtype=np.int64)
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
