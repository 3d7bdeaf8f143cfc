"""`doccano.v1`: doccano's JSONL export of a sequence-labelling or a text-classification project.

One text a line. Sequence labelling (`ner.v1`): `{"id": 7, "text": "...", "label": [[start,
end, "TYPE"], ...]}` (end exclusive), the older `labels` key, or, from a project with
relations, `"entities": [{"start_offset", "end_offset", "label"}]`. doccano counts offsets in
UTF-16 code units, as JavaScript does (they differ from characters after an emoji or another
character outside the Basic Multilingual Plane); `offsets` says so. Every span is checked
against the text; overlapping ones are all kept. Text classification (`textcat.v1`): `{"id":
7, "text": "...", "label": ["positive"]}` (the older `labels` key, or one class as a string);
a class several annotators chose is read once; `"label": []`, which doccano writes for a text
nobody labelled, is unlabelled. Other keys (`Comments`, metadata) are ignored.

`project` says which kind the file is; "auto" (the default) tells from the first line with a
label, and a line of the other kind is bad data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Example
from nlpfw_plugins.exports import ExportConfig, ExportDataset
from nlpfw_plugins.formats import (SPAN_KEYS, Bad, Offsets, Project, doccano_records, from_records, is_classes, json_lines,
                                   json_record, read_doccano)



class DoccanoConfig(ExportConfig):
    train: str = Field(default="train.jsonl", description="file of the train split, in `path`")
    dev: str = Field(default="dev.jsonl", description="file of the dev split, in `path`")
    offsets: Offsets = Field(
        default="utf16", description="unit of the offsets: utf16 (doccano's, JavaScript's) or codepoints (Python's)"
    )
    project: Project = Field(
        default="auto",
        description="the doccano project type of the export: sequence_labeling (spans), text_classification (classes), or auto: from its first labelled line",
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
        return read_doccano(path, bad, self.config.offsets, labelled=split != "test", project=self.config.project)

    @classmethod
    def read_file(cls, path: Path, bad: Bad, project: Project = "auto") -> list[Example]:
        """Every line of one file (lines without labels have `gold` None), for `nlpfw convert`
        (`--option project=text_classification`)."""
        if project not in ("auto", "sequence_labeling", "text_classification"):
            raise DataError(f"project: {project!r} is none of auto, sequence_labeling, text_classification")
        return read_doccano(path, bad, labelled=False, project=project)

    @classmethod
    def write_file(cls, examples: Sequence[Example]) -> tuple[str, int, list[str]]:
        """(doccano JSONL, UTF-16 offsets or classes; every text written; a note on texts with
        no class, which doccano's `"label": []` cannot tell from texts nobody labelled)."""
        classes = any(is_classes(e.gold) for e in examples)
        none = sum(e.gold is not None and not e.gold for e in examples) if classes else 0
        notes = [f"{none:,} text(s) with no class were written with \"label\": [], which reads back as unlabelled"] if none else []
        return json_lines(doccano_records(examples)), len(examples), notes

    @classmethod
    def detect_format(cls, path: Path, first: str) -> str | None:
        """A JSON line with one of doccano's label lists (`label`, `labels`, `entities`): spans or classes."""
        record = json_record(first)
        return "doccano" if record is not None and any(isinstance(record.get(k), list) for k in SPAN_KEYS) else None

    @classmethod
    def prediction_file(cls, records: Sequence[dict[str, Any]], model_version: str) -> str:
        """JSONL to import: the prediction records' entities or classes as the labels, the
        confidences (and each class's probability) as metadata."""
        examples, predicted = from_records(records)
        return json_lines(doccano_records(examples, predicted=predicted))


@hookimpl
def register_datasets(register):
    register("doccano.v1", Doccano)
