"""Pre-annotations for the annotation tools, and what to label next: `nlpfw predict
--output-format label-studio|doccano` and `--rank uncertainty`.

Confidence goes through two optional methods of the contract, so the core knows no task's
vocabulary: the decoder's `confidence(hidden, mask, output)` (the probability of each choice
`decode` made, in `decode`'s form, cut per window by `unbatch`; `crf.v1`: the CRF's marginal
probability of the chosen tag, by forward-backward; `softmax.v1`: its softmax probability), and
the task's `confidence(text, prediction, windows, target)`, which combines a text's windows of
those into the prediction's record fields with a confidence per annotation, and the text's
confidence (`ner.v1`: an entity's is the lowest of its characters', the text's the lowest of
all its characters', each character scored by the window that owns it; `classifier.v1` gives
its class probabilities, and `textcat.v1` takes the top class's probability, or for multi-label
the least certain class decision's). Texts are ranked by the text's confidence.

A tool's file is written by the dataset component that reads that tool's exports, found
through the registry: its class attribute `prediction_format` names the format
(`label_studio.v1`: `label-studio`; `doccano.v1`: `doccano`) and its `prediction_file` class
method writes the prediction records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nlpfw.convert import option_names
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Example, Window
from nlpfw.model import LoadedModel

JSONL = "jsonl"  # the core's own output format: the prediction records as JSON lines


def output_formats(registry: Any) -> dict[str, type]:
    """The tools' formats `--output-format` can write: each dataset's `prediction_format` (a
    class attribute naming the format its `prediction_file` writes) and the dataset class."""
    formats: dict[str, type] = {}
    for name in registry.names("dataset"):
        cls = registry.get("dataset", name).cls
        form = getattr(cls, "prediction_format", None)
        if form is not None and callable(getattr(cls, "prediction_file", None)):
            formats.setdefault(form, cls)
    return formats


def check_output_format(output_format: str, registry: Any, options: dict[str, str] | None = None) -> None:
    """An error naming the formats when no dataset writes `output_format`, or naming an
    `--option` its `prediction_file` does not take (keywords after records and model_version)."""
    known = output_formats(registry)
    if output_format != JSONL and output_format not in known:
        raise NlpfwError(f"--output-format: unknown format {output_format!r}; formats: {', '.join([JSONL, *known])}")
    takes = [] if output_format == JSONL else option_names(known[output_format].prediction_file, 2)
    for key in options or {}:
        if key not in takes:
            raise NlpfwError(f"--option {key}: the {output_format} output takes no such option; "
                             f"it takes: {', '.join(takes) or 'none'}")  # fmt: skip


@dataclass
class Scored:
    """A text's prediction (the task's form), its record fields (`Task.output`, or with a
    confidence per annotation, `Task.confidence`) and the text's confidence (None: the decoder
    or the task gives no probabilities)."""

    prediction: Any
    fields: dict[str, Any]
    score: float | None = None


def gives_probabilities(model: LoadedModel) -> bool:
    """Whether the model's decoder and task both have their `confidence` method."""
    return callable(getattr(model.model.decoder, "confidence", None)) and callable(getattr(model.task, "confidence", None))


class _Windows:
    """`EncodedSplit.combine`'s task that keeps each text's windows as they are."""

    def combine(self, text: str, windows: Sequence[Window], target: str) -> list[Window]:
        return list(windows)


@torch.no_grad()
def scored_predictions(model: LoadedModel, texts: Sequence[str], batch_size: int = 64) -> list[Scored]:
    """Each text's prediction with its confidences, in input order (the same predictions as
    `model.predictions`). Needs a decoder and a task with `confidence`."""
    if not gives_probabilities(model):
        raise NlpfwError(f"decoder {model.recipe.decoder.type} with task {model.recipe.task.type} gives no "
                         "probabilities, so texts cannot be scored; confidence needs a decoder and a task with a "
                         "confidence method (crf.v1 or softmax.v1 with ner.v1, classifier.v1 with textcat.v1)")  # fmt: skip
    network, task = model.model, model.task
    network.eval()
    decoder, target = network.decoder, network.decoder.target
    split = model.encode([Example(t) for t in texts])
    lengths = split.window_length.astype(np.int64)
    outputs: list[Any] = [None] * len(split)
    confidences: list[Any] = [None] * len(split)
    order = np.argsort(-lengths, kind="stable").tolist()
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        batch = {k: v.to(model.device) for k, v in task.collate([split[i] for i in rows]).items()}
        hidden = network.encoder(batch["input_ids"], batch["mask"])
        output = decoder.decode(hidden, batch["mask"])
        confidence = decoder.confidence(hidden, batch["mask"], output).float()
        cut = lengths[rows].tolist()
        for row, out, conf in zip(rows, decoder.unbatch(output, cut), decoder.unbatch(confidence, cut)):
            outputs[row], confidences[row] = out, conf
    predicted = split.combine(task, outputs, target)
    windows = split.combine(_Windows(), confidences, target)  # type: ignore[arg-type]
    results = []
    for text, prediction, text_windows in zip(texts, predicted, windows):
        fields, score = task.confidence(text, prediction, text_windows or [], target)
        results.append(Scored(prediction, fields, score))
    return results


def predictions(model: LoadedModel, texts: Sequence[str], batch_size: int, scored: bool) -> list[Scored]:
    """Scored predictions, or (`scored` false, or no probabilities) plain ones."""
    if scored and gives_probabilities(model):
        return scored_predictions(model, texts, batch_size)
    return [Scored(p, model.task.output(t, p)) for t, p in zip(texts, model.predictions(texts, batch_size))]


def uncertainty_order(predicted: Sequence[Scored]) -> list[int]:
    """Indices from the least to the most confident text (ties keep input order)."""
    return sorted(range(len(predicted)), key=lambda i: (predicted[i].score, i))


def render(
    records: Sequence[dict[str, Any]],
    predicted: Sequence[Scored],
    output_format: str,
    model_version: str,
    rank: bool,
    registry: Any,
    options: dict[str, str] | None = None,
) -> tuple[str, list[int]]:
    """The output file's text for input `records` (`{"text", "id"?}`) and their predictions, and
    the order the texts are in (by uncertainty with `rank`, else input order). Each prediction
    record is `{**record, **fields}`, with the text's `confidence` when it has one; `options`
    go to the tool format's `prediction_file` (`predict --option`)."""
    order = uncertainty_order(predicted) if rank else list(range(len(records)))
    lines = []
    for index in order:
        out = {**records[index], **predicted[index].fields}
        if predicted[index].score is not None:
            out["confidence"] = predicted[index].score
        lines.append(out)
    if output_format != JSONL:
        check_output_format(output_format, registry, options)
        return output_formats(registry)[output_format].prediction_file(lines, model_version, **(options or {})), order
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), order
