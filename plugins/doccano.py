"""`doccano.v1`: doccano's JSONL export of a sequence-labelling project.

One text a line: `{"id": 7, "text": "...", "label": [[start, end, "TYPE"], ...]}` (end
exclusive), the older `labels` key, or, from a project with relations, `"entities":
[{"start_offset", "end_offset", "label"}]`; other keys (`Comments`, metadata) are ignored.
doccano counts offsets in UTF-16 code units, as JavaScript does (they differ from characters
after an emoji or another character outside the Basic Multilingual Plane); `offsets` says so.
Every span is checked against the text; overlapping ones are all kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Example
from nlpfw_plugins.exports import ExportConfig, ExportDataset
from nlpfw_plugins.formats import SPAN_KEYS, Bad, Offsets, doccano_records, from_records, json_lines, json_record, read_doccano



class DoccanoConfig(ExportConfig):
    train: str = Field(default="train.jsonl", description="file of the train split, in `path`")
    dev: str = Field(default="dev.jsonl", description="file of the dev split, in `path`")
    offsets: Offsets = Field(
        default="utf16", description="unit of the offsets: utf16 (doccano's, JavaScript's) or codepoints (Python's)"
    )


class Doccano(ExportDataset):
    """doccano JSONL exports, one file per split or one file split in two."""

    config_model = DoccanoConfig
    config: DoccanoConfig
    name = "doccano.v1"
    file_formats = {"doccano": {}}  # nlpfw convert's: write_file options
    prediction_format = "doccano"  # nlpfw predict --output-format: prediction_file writes it

    def read_all(self, path: Path, split: str) -> list[Example]:
        bad = lambda where, message: self.bad_data(where, message, self.config.on_error)  # noqa: E731
        return read_doccano(path, bad, self.config.offsets, labelled=split != "test")

    @classmethod
    def read_file(cls, path: Path, bad: Bad) -> list[Example]:
        """Every line of one file (lines without spans have `gold` None), for `nlpfw convert`."""
        return read_doccano(path, bad, labelled=False)

    @classmethod
    def write_file(cls, examples: Sequence[Example]) -> tuple[str, int, list[str]]:
        """(doccano JSONL, UTF-16 offsets; every text written; no notes)."""
        return json_lines(doccano_records(examples)), len(examples), []

    @classmethod
    def detect_format(cls, path: Path, first: str) -> str | None:
        """A JSON line with one of doccano's span lists (`label`, `labels`, `entities`)."""
        record = json_record(first)
        return "doccano" if record is not None and any(isinstance(record.get(k), list) for k in SPAN_KEYS) else None

    @classmethod
    def prediction_file(cls, records: Sequence[dict[str, Any]], model_version: str) -> str:
        """JSONL to import: the prediction records' entities as the labels, the confidences as metadata."""
        examples, predicted = from_records(records)
        return json_lines(doccano_records(examples, predicted=predicted))


@hookimpl
def register_datasets(register):
    register("doccano.v1", Doccano)
