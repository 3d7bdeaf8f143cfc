"""`label_studio.v1`: Label Studio's JSON export of a named-entity or a text-classification project.

The export is a list of tasks, each with the text in `data.text` (`text_field`) and the
annotators' work in `annotations[].result[]`. For entities (`ner.v1`), regions of type `labels`
whose `value` holds `start`, `end` (character offsets, end exclusive), `text` and `labels`;
each region's `value.text` must be the text at its offsets, else it is bad data (`file:task
N`); overlapping regions are all kept (the task keeps what its tags can hold and counts the
rest). For classes (`textcat.v1`), results of type `choices` whose `value.choices` lists the
chosen classes (one from a `choice="single"` control, any number from a `choice="multiple"`
one); an annotation with no choice gives no class (multi-label: none applies).

Which of the two is read is `result_type`: "auto" (the default) reads what the file holds, and
refuses, naming the controls, a file holding both (a project that marks entities and
classifies texts) or choices of several controls; `from_name` reads one control by the name
its labeling config gives it. One annotation per task is read: the latest (or, with
`annotation = "ground_truth"`, the one a reviewer marked), among those of `annotator` if set;
cancelled ones (skipped tasks) are left out, and so are tasks with no annotation to take, in
train and dev. Results of other types (relations, text areas) are not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nlpfw.errors import DataError
from nlpfw.hookspecs import hookimpl
from nlpfw.interfaces import Example
from nlpfw_plugins.exports import ExportConfig, ExportDataset
from nlpfw_plugins.formats import (Bad, LabelStudioOptions, Offsets, ResultType, from_records, json_list, json_record,
                                   label_studio_tasks, read_label_studio)



class LabelStudioConfig(ExportConfig):
    train: str = Field(default="train.json", description="file of the train split, in `path`")
    dev: str = Field(default="dev.json", description="file of the dev split, in `path`")
    text_field: str = Field(default="text", description="the task data field holding the text ($text in the labeling config)")
    annotation: Literal["latest", "ground_truth"] = Field(
        default="latest", description="which annotation of a task to read: the latest, or the one marked ground truth"
    )
    annotator: str | None = Field(
        default=None, description="read only this annotator's annotations (user id, e-mail or username)"
    )
    offsets: Offsets = Field(
        default="codepoints", description="unit of value.start/end: code points (Label Studio since 2022), or utf16 (older versions)"
    )
    result_type: ResultType = Field(
        default="auto",
        description="what to read: labels (entity regions), choices (classes), or auto: what the file holds (a file with both is an error)",
    )
    from_name: str | None = Field(
        default=None, description="read only the results of this control (its name= in the labeling config)"
    )


class LabelStudio(ExportDataset):
    """Label Studio JSON exports, one file per split or one file split in two."""

    config_model = LabelStudioConfig
    config: LabelStudioConfig
    name = "label_studio.v1"
    file_formats = {"label-studio": {}}  # nlpfw convert's: write_file options
    prediction_format = "label-studio"  # nlpfw predict --output-format: prediction_file writes it

    def read_all(self, path: Path, split: str) -> list[Example]:
        options = LabelStudioOptions(self.config.text_field, self.config.annotation, self.config.annotator,
                                     self.config.offsets, self.config.result_type, self.config.from_name)  # fmt: skip
        return read_label_studio(path, lambda where, message: self.bad_data(where, message, self.config.on_error), options)

    @classmethod
    def read_file(cls, path: Path, bad: Bad, text_field: str = "text", result_type: ResultType = "auto",
                  from_name: str | None = None, annotator: str | None = None) -> list[Example]:  # fmt: skip
        """Every task of one export (unannotated ones with `gold` None), for `nlpfw convert`
        (`--option result_type=choices`, `from_name=...`, `annotator=...`)."""
        if result_type not in ("auto", "labels", "choices"):
            raise DataError(f"result_type: {result_type!r} is none of auto, labels, choices")
        options = LabelStudioOptions(text_field=text_field, annotator=annotator, result_type=result_type, from_name=from_name)
        return read_label_studio(path, bad, options)

    @classmethod
    def write_file(cls, examples: Sequence[Example], text_field: str = "text", from_name: str | None = None,
                   to_name: str = "text") -> tuple[str, int, list[str]]:  # fmt: skip
        """(Label Studio tasks holding the spans or the classes as an annotation; every text
        written; no notes). `from_name`/`to_name`: the labeling config's control and object
        names the results give (default: Label Studio's templates', `label` or `sentiment`, and
        `text`)."""
        tasks = label_studio_tasks(examples, text_field=text_field, from_name=from_name, to_name=to_name)
        return json_list(tasks), len(examples), []

    @classmethod
    def detect_format(cls, path: Path, first: str) -> str | None:
        """A JSON list (`[`), or a pretty-printed task (`{` that is not a whole JSON line)."""
        stripped = first.strip()
        if stripped.startswith("[") or (stripped.startswith("{") and json_record(stripped) is None):
            return "label-studio"
        return None

    @classmethod
    def prediction_file(cls, records: Sequence[dict[str, Any]], model_version: str, text_field: str = "text",
                        from_name: str | None = None, to_name: str = "text") -> str:  # fmt: skip
        """Tasks with the prediction records' entities (a `labels` region each) or classes (a
        `choices` result) as pre-annotations (`predictions`, with their confidences as scores),
        for `nlpfw predict --output-format label-studio`; `--option text_field=`, `from_name=`,
        `to_name=` match another labeling config (as `write_file`)."""
        examples, predicted = from_records(records)
        return json_list(label_studio_tasks(examples, predicted, model_version, text_field, from_name, to_name))


@hookimpl
def register_datasets(register):
    register("label_studio.v1", LabelStudio)
