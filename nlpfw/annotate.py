"""Pre-annotations for the annotation tools, and what to label next: `nlpfw predict
--output-format label-studio|doccano` and `--rank uncertainty`.

Confidence comes from a tag decoder's optional `marginals(hidden, mask)` (`crf.v1`: the CRF's
marginal probabilities by forward-backward; `softmax.v1`: its tag probabilities): each
character's confidence is the probability of the tag it was given, an entity's is the lowest
of its characters', and a text's is the lowest of all its characters' (1 for an empty text),
so one doubtful character, inside an entity or just outside one, makes the text doubtful
whatever its length. Texts longer than the window are scored per window, each character by
the window that owns it, as their entities are merged.

A tool's file is written by the dataset component that reads that tool's exports (its
`prediction_file` class method: `label_studio.v1`, `doccano.v1`), found through the registry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nlpfw.corpus import owned_ranges
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Example, Span
from nlpfw.model import LoadedModel

OUTPUT_DATASETS = {"label-studio": "label_studio.v1", "doccano": "doccano.v1"}  # --output-format: its writer
DIGITS = 4


@dataclass
class ScoredSpans:
    """A text's predicted spans with a confidence each, and the text's confidence (None: the
    decoder gives no probabilities)."""

    spans: list[Span]
    scores: list[float] | None = None
    score: float | None = None


def gives_probabilities(model: LoadedModel) -> bool:
    decoder = model.model.decoder
    return decoder.target == "tags" and callable(getattr(decoder, "marginals", None))


@torch.no_grad()
def scored_predictions(model: LoadedModel, texts: Sequence[str], batch_size: int = 64) -> list[ScoredSpans]:
    """Each text's entities with a confidence each and the text's confidence, in input order
    (the same entities as `model.predict_spans`). Needs a decoder with `marginals`."""
    if not gives_probabilities(model):
        name = model.recipe.decoder.type
        raise NlpfwError(f"decoder {name} gives no tag probabilities, so texts cannot be scored; "
                         "confidence needs a tag decoder with marginals (crf.v1, softmax.v1)")  # fmt: skip
    network, task = model.model, model.task
    network.eval()
    split = model.encode([Example(t) for t in texts])
    lengths = split.window_length.astype(np.int64)
    window_spans: list[Any] = [[] for _ in range(len(split))]
    window_confidence: list[np.ndarray] = [np.zeros(0)] * len(split)
    order = np.argsort(-lengths, kind="stable").tolist()
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        batch = {k: v.to(model.device) for k, v in task.collate([split[i] for i in rows]).items()}
        hidden = network.encoder(batch["input_ids"], batch["mask"])
        tags = network.decoder.decode(hidden, batch["mask"])
        chosen = network.decoder.marginals(hidden, batch["mask"]).gather(2, tags.unsqueeze(2)).squeeze(2)
        tags, chosen = tags.cpu().numpy(), chosen.float().cpu().numpy()
        for j, row in enumerate(rows):
            start, length = int(split.window_start[row]), int(lengths[row])
            text = split.examples[split.window_text[row]].text[start : start + length]
            window_spans[row] = task.output_spans(text, tags[j, :length], "tags")
            window_confidence[row] = chosen[j, :length]
    merged = split.merge(window_spans)
    results = []
    for index, (text, spans) in enumerate(zip(texts, merged)):
        confidence = text_confidence(split, index, len(text), window_confidence)
        scores = [round(float(confidence[s.start : s.end].min()), DIGITS) for s in spans]
        overall = round(float(confidence.min()), DIGITS) if len(text) else 1.0
        results.append(ScoredSpans(spans, scores, overall))
    return results


def text_confidence(split: Any, index: int, length: int, window_confidence: list[np.ndarray]) -> np.ndarray:
    """Each character's confidence in text `index`, from the window that owns it."""
    rows = np.flatnonzero(split.window_text == index)
    confidence = np.ones(length, dtype=np.float64)
    starts = [int(split.window_start[r]) for r in rows]
    for row, start, (lo, hi) in zip(rows, starts, owned_ranges(starts, length, split.window)):
        confidence[lo:hi] = window_confidence[row][lo - start : hi - start]
    return confidence


def predictions(model: LoadedModel, texts: Sequence[str], batch_size: int, scored: bool) -> list[ScoredSpans]:
    """Scored predictions, or (`scored` false, or a decoder without probabilities) plain ones."""
    if scored and gives_probabilities(model):
        return scored_predictions(model, texts, batch_size)
    return [ScoredSpans(spans) for spans in model.predict_spans(texts, batch_size)]


def uncertainty_order(predicted: Sequence[ScoredSpans]) -> list[int]:
    """Indices from the least to the most confident text (ties keep input order)."""
    return sorted(range(len(predicted)), key=lambda i: (predicted[i].score, i))


def render(
    records: Sequence[dict[str, Any]],
    predicted: Sequence[ScoredSpans],
    output_format: str,
    model_version: str,
    rank: bool,
    registry: Any,
) -> tuple[str, list[int]]:
    """The output file's text for input `records` (`{"text", "id"?}`) and their predictions, and
    the order the texts are in (by uncertainty with `rank`, else input order)."""
    order = uncertainty_order(predicted) if rank else list(range(len(records)))
    records = [records[i] for i in order]
    predicted = [predicted[i] for i in order]
    if output_format in OUTPUT_DATASETS:
        writer = registry.get("dataset", OUTPUT_DATASETS[output_format]).cls
        examples = [Example(r["text"], None, r.get("id")) for r in records]
        return writer.prediction_file(examples, predicted, model_version), order
    lines = []
    for record, scored in zip(records, predicted):
        entities = [{"type": s.label, "text": s.text_in(record["text"]), "start": s.start, "end": s.end}
                    for s in scored.spans]  # fmt: skip
        out = {**record, "entities": entities}
        if scored.scores is not None:
            for entity, score in zip(entities, scored.scores):
                entity["confidence"] = score
            out["confidence"] = scored.score
        lines.append(out)
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), order
