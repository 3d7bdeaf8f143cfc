"""Prediction and evaluation with a trained model: inputs, outputs and the CLUENER submission.

Inputs are plain text (one text a line) or JSON lines (`{"text": ..., "id": ...}`); outputs
are JSON lines, one per input in input order:

    {"id": 3, "text": "...", "entities": [{"type": "name", "text": "张三", "start": 0, "end": 2}]}

`start`/`end` are character offsets into `text` (end exclusive), so `text[start:end]` is the
entity whatever the text holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nlpfw import textfile
from nlpfw.errors import DataError
from nlpfw.interfaces import Example
from nlpfw.model import LoadedModel, entity_records

CHUNK = 2048  # texts predicted at a time: bounds memory, and advances the progress bar


def read_inputs(path: Path, form: str = "auto") -> list[dict[str, Any]]:
    """`{"text", "id"?}` records of an input file; `form` is text, jsonl or auto (by extension)."""
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    if form == "auto":
        form = "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "text"
    records = []
    with textfile.open_text(path) as stream:  # a "\r" inside a line stays in its text
        for number, line in stream:
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
            for key in ("text", "id"):  # a text no output file could hold
                if isinstance(record.get(key), str) and (problem := textfile.surrogate_problem(record[key], f'"{key}"')):
                    raise DataError(f"{path}:{number}: {problem}")
            records.append({k: record[k] for k in ("id", "text") if k in record})
    return records


def predict_records(
    model: LoadedModel,
    records: Sequence[dict[str, Any]],
    batch_size: int = 64,
    advance: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each input record with its `entities`, in input order, a chunk at a time."""
    for begin in range(0, len(records), CHUNK):
        chunk = records[begin : begin + CHUNK]
        spans = model.predict_spans([r["text"] for r in chunk], batch_size)
        for record, found in zip(chunk, spans):
            yield {**record, "entities": entity_records(record["text"], found)}
        if advance is not None:
            advance(len(chunk))


def cluener_submission(examples: Sequence[Example], predicted: Sequence[Sequence[dict[str, Any]]]) -> Iterator[str]:
    """CLUENER2020 leaderboard lines: `{"id": ..., "label": {type: {entity: [[start, end]]}}}`,
    with CLUENER's inclusive end offsets."""
    for example, entities in zip(examples, predicted):
        label: dict[str, dict[str, list[list[int]]]] = {}
        for entity in entities:
            label.setdefault(entity["type"], {}).setdefault(entity["text"], []).append(
                [entity["start"], entity["end"] - 1]
            )
        yield json.dumps({"id": example.id, "label": label}, ensure_ascii=False)


def labelled_file(model: LoadedModel, path: Path, registry: Any) -> list[Example]:
    """Labelled examples of a user's file: JSON lines (`.json`, `.jsonl`; CLUENER form or
    start/end/label spans) through `jsonl_spans.v1`, anything else as CoNLL through `conll.v1`,
    with the model's entity types."""
    if not path.is_file():
        raise DataError(f"--data: file not found: {path}")
    kind = "jsonl_spans.v1" if path.suffix.lower() in (".jsonl", ".json") else "conll.v1"
    component = registry.get("dataset", kind)
    config = component.cls.config_model(
        path=str(path.parent.absolute()), train=path.name, dev=path.name, entity_types=model.task.entity_types
    )
    try:
        return component.cls(config, path.parent).load("dev")
    except DataError as error:  # a user's file, not a recipe's dataset: no dataset.on_error to set
        raise DataError(str(error).replace(' (set dataset.on_error = "skip" to skip such records)', "")) from None
