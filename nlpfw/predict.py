"""Prediction and evaluation with a trained model: inputs, outputs, labelled files.

Inputs are plain text (one text a line) or JSON lines (`{"text": ..., "id": ...}`); outputs
are JSON lines, one per input in input order, each the input record with the task's fields
(`Task.output`):

    {"id": 3, "text": "...", "entities": [{"type": "name", "text": "张三", "start": 0, "end": 2}]}   NER
    {"id": 4, "text": "...", "label": "pos", "scores": {"neg": 0.03, "pos": 0.97}}                    a classifier

NER's `start`/`end` are character offsets into `text` (end exclusive), so `text[start:end]` is
the entity whatever the text holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nlpfw.errors import DataError, NlpfwError
from nlpfw.interfaces import Example
from nlpfw.model import LoadedModel

CHUNK = 2048  # texts predicted at a time: bounds memory, and advances the progress bar


def read_inputs(path: Path, form: str = "auto") -> list[dict[str, Any]]:
    """`{"text", "id"?}` records of an input file; `form` is text, jsonl or auto (by extension)."""
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    if form == "auto":
        form = "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "text"
    records = []
    with path.open(encoding="utf-8", newline="") as stream:
        for number, line in enumerate(stream, 1):
            line = line.rstrip("\r\n")
            if form == "text":
                records.append({"text": line})
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error}); use --format text for plain lines") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f'{path}:{number}: expected an object with a string "text"')
            records.append({k: record[k] for k in ("id", "text") if k in record})
    return records


def predict_records(
    model: LoadedModel,
    records: Sequence[dict[str, Any]],
    batch_size: int = 64,
    advance: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each input record with the task's prediction fields, in input order, a chunk at a time."""
    for begin in range(0, len(records), CHUNK):
        chunk = records[begin : begin + CHUNK]
        predictions = model.predictions([r["text"] for r in chunk], batch_size)
        for record, prediction in zip(chunk, predictions):
            yield {**record, **model.task.output(record["text"], prediction)}
        if advance is not None:
            advance(len(chunk))


def submission(dataset: Any, examples: Sequence[Example], records: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """The dataset's leaderboard file for predictions on its examples: (default name, lines);
    an error naming the dataset when it has no submission format."""
    try:
        return dataset.submission(examples, records)
    except NotImplementedError:
        raise NlpfwError(f"--submission: dataset {type(dataset).__name__} has no submission format") from None


def labelled_file(model: LoadedModel, path: Path, registry: Any) -> list[Example]:
    """Labelled examples of a user's file, read as the model's task says (`Task.file_dataset`:
    NER reads JSON lines through `jsonl_spans.v1` and anything else as CoNLL; a classifier reads
    its dataset's format), with the model's labels."""
    if not path.is_file():
        raise DataError(f"--data: file not found: {path}")
    section = model.recipe.dataset
    kind, options = model.task.file_dataset(path, section.type, section.config)
    component = registry.get("dataset", kind)
    return component.cls(component.cls.config_model(**options), path.parent).load("dev")
