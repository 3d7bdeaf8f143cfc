"""Reading and writing the corpus formats nlpfw moves between: CLUENER JSON lines, JSON spans,
CoNLL (BIO or BIOES), Label Studio JSON, doccano JSONL, and plain texts.

Not a plugin (it registers nothing): the dataset plugins use it, and through their
`read_file`, `write_file` and `prediction_file` class methods so do `nlpfw convert` and
`nlpfw predict --output-format` (the core reaches formats through the registry only).

Every reader keeps every span exactly as the file gives it, overlapping ones included (the
task decides what its tags can hold), drops exact duplicates and sorts them; a text with no
labels is an `Example` whose `gold` is None. Offsets in nlpfw are code points into the text,
end exclusive. Label Studio stores code points too (since its 2022 frontend; older versions
stored UTF-16 code units, which `offsets = "utf16"` reads); doccano stores UTF-16 code units
(JavaScript string offsets), which differ from code points only after a character outside the
Basic Multilingual Plane (most emoji, CJK extension B and beyond).

A gold annotation is either entity spans (a list of `Span`, for `ner.v1`) or class names (a
list of strings, for `textcat.v1`): the tools' exports hold one or the other (Label Studio:
`labels` regions or `choices`; doccano: a sequence-labelling or a text-classification
project), and the writers write whichever the examples hold.

Each reader reports bad data through `bad(where, message)`, which raises or records (the
dataset's `on_error`), and then leaves the task, line or span out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from nlpfw.errors import DataError
from nlpfw.interfaces import Example, Span
from nlpfw_plugins.tags import Scheme, write_tags

Bad = Callable[[str, str], None]
Offsets = Literal["codepoints", "utf16"]
ResultType = Literal["auto", "labels", "choices"]  # Label Studio's result types nlpfw reads
Project = Literal["auto", "sequence_labeling", "text_classification"]  # doccano's project types nlpfw reads
FORMATS = ("cluener", "spans", "conll", "conll-bioes", "label-studio", "doccano", "text")


@dataclass
class ScoredSpans:
    """A text's predicted spans with a confidence each, and the text's confidence (None: the
    model gave no probabilities)."""

    spans: list[Span]
    scores: list[float] | None = None
    score: float | None = None


@dataclass
class ScoredClasses:
    """A text's predicted classes, the text's confidence (None: no probabilities) and every
    class's probability."""

    labels: list[str]
    score: float | None = None
    scores: dict[str, float] | None = None


SPAN_KEYS = ("label", "labels", "entities")  # doccano's span lists, by version


def is_classes(gold: Any) -> bool:
    """Whether a gold annotation is class names (classification), not entity spans."""
    return isinstance(gold, (list, tuple)) and any(isinstance(item, str) for item in gold)


def require_spans(examples: Sequence[Example], form: str) -> None:
    """An error when an example holds classes, which the entity format `form` cannot hold."""
    number = next((n for n, e in enumerate(examples, 1) if is_classes(e.gold)), None)
    if number is not None:
        raise DataError(f"text {number} holds classes {list(examples[number - 1].gold)}; {form} holds entity spans "
                        "(write text-labels, text-labels-csv, text-labels-tsv, label-studio or doccano)")  # fmt: skip


def label_names(gold: Any) -> list[str]:
    """The label names a gold annotation uses: entity types of spans, or the classes."""
    return [item if isinstance(item, str) else item.label for item in gold or ()]


def json_record(first: str) -> dict[str, Any] | None:
    """The JSON object on a file's first non-blank line, or None when it is not one."""
    stripped = first.strip()
    if not stripped.startswith("{"):
        return None
    try:
        record = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def write_notes(examples: Sequence[Example], written: int, dropped: int) -> list[str]:
    """`nlpfw convert`'s notes on what CoNLL could not hold."""
    notes = []
    if dropped:
        notes.append(f"{dropped:,} span(s) overlap a longer one and were left out (CoNLL tags hold one entity per character)")
    if written < len(examples):
        notes.append(f"{len(examples) - written:,} text(s) without labels (or empty) were left out: CoNLL holds labelled texts")
    return notes


def from_records(records: Sequence[dict[str, Any]]) -> tuple[list[Example], list[ScoredSpans | ScoredClasses]]:
    """Prediction records as `nlpfw predict` writes them, as unlabelled examples and their scored
    predictions, for `prediction_file`: `ner.v1`'s (`{"text", "id"?, "entities": [{"type",
    "start", "end", "confidence"?}], "confidence"?}`) as `ScoredSpans`, `textcat.v1`'s (`{"text",
    "id"?, "label": NAME | null, "scores": {...}, "confidence"?}`, or `"labels": [...]` when
    multi-label) as `ScoredClasses`."""
    examples: list[Example] = []
    predicted: list[ScoredSpans | ScoredClasses] = []
    for record in records:
        if "entities" not in record and ("label" in record or "labels" in record):
            labels = record["labels"] if "labels" in record else [record["label"]] if record["label"] is not None else []
            examples.append(Example(record["text"], None, record.get("id")))
            predicted.append(ScoredClasses(list(labels), record.get("confidence"), record.get("scores")))
            continue
        entities = record.get("entities", [])
        spans = [Span(e["start"], e["end"], e["type"]) for e in entities]
        scores = [e["confidence"] for e in entities] if all("confidence" in e for e in entities) else None
        score = record.get("confidence")
        examples.append(Example(record["text"], None, record.get("id")))
        predicted.append(ScoredSpans(spans, scores if score is not None else None, score))
    return examples, predicted


# --- offsets ----------------------------------------------------------------------------------


class OffsetMap:
    """Between code-point offsets (Python's) and UTF-16 code-unit offsets (JavaScript's) of one text."""

    def __init__(self, text: str):
        self.identity = all(ord(c) < 0x10000 for c in text)
        if not self.identity:
            units = [0]
            for char in text:
                units.append(units[-1] + (2 if ord(char) >= 0x10000 else 1))
            self.to_units = units
            self.from_units = {unit: index for index, unit in enumerate(units)}

    def index(self, unit: int) -> int | None:
        """The code-point offset at UTF-16 offset `unit`, or None inside a surrogate pair."""
        return unit if self.identity else self.from_units.get(unit)

    def unit(self, index: int) -> int:
        """The UTF-16 offset of code-point offset `index`."""
        return index if self.identity else self.to_units[index]


def to_codepoints(text: str, start: int, end: int, offsets: Offsets) -> tuple[int, int] | None:
    """(start, end) in code points, from offsets in unit `offsets`; None if they split a character."""
    if offsets == "codepoints":
        return start, end
    mapping = OffsetMap(text)
    s, e = mapping.index(start), mapping.index(end)
    return None if s is None or e is None else (s, e)


def from_codepoints(text: str, span: Span, offsets: Offsets) -> tuple[int, int]:
    if offsets == "codepoints":
        return span.start, span.end
    mapping = OffsetMap(text)
    return mapping.unit(span.start), mapping.unit(span.end)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def check_span(text: str, start: Any, end: Any, shown: str, bad: Callable[[str], None]) -> bool:
    """Whether [start, end) is a non-empty range of ints inside `text`; else reports it."""
    if not (is_int(start) and is_int(end)):
        bad(f"{shown}: start and end must be integers, found {json.dumps([start, end], ensure_ascii=False)}")
        return False
    if not 0 <= start < end <= len(text):
        if 0 <= end <= start < len(text):
            bad(f"{shown} is empty or reversed")
        else:
            bad(f"{shown} is out of range for a text of {len(text)} characters")
        return False
    return True


# --- Label Studio -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelStudioOptions:
    """How to read a Label Studio export: see `label_studio.v1`'s options."""

    text_field: str = "text"
    annotation: Literal["latest", "ground_truth"] = "latest"
    annotator: str | None = None
    offsets: Offsets = "codepoints"
    result_type: ResultType = "auto"
    from_name: str | None = None


def _timestamp(annotation: dict[str, Any]) -> datetime:
    for key in ("updated_at", "created_at"):
        value = annotation.get(key)
        if isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
    return datetime.min.replace(tzinfo=timezone.utc)


def annotator_names(annotation: dict[str, Any]) -> set[str]:
    """The ways an export names an annotation's author: the user id, the e-mail, the username."""
    names: set[str] = set()
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        names |= {str(who[k]) for k in ("id", "email", "username") if who.get(k) is not None}
    elif who is not None:
        names.add(str(who))
    username = annotation.get("created_username")
    if isinstance(username, str) and username:
        names |= {username, username.split(",")[0].strip()}
    return names


def choose_annotation(annotations: Sequence[Any], options: LabelStudioOptions) -> dict[str, Any] | None:
    """The annotation to train on: not cancelled, by `annotator` if set; the one marked ground
    truth (with `annotation = "ground_truth"`, when there is one), else the latest (by
    `updated_at`, then `created_at`, then place in the list)."""
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if options.annotator is not None:
        kept = [a for a in kept if options.annotator in annotator_names(a)]
    if not kept:
        return None
    if options.annotation == "ground_truth":
        truth = [a for a in kept if a.get("ground_truth")]
        kept = truth or kept
    return max(enumerate(kept), key=lambda pair: (_timestamp(pair[1]), pair[0]))[1]


def read_label_studio(path: Path, bad: Bad, options: LabelStudioOptions = LabelStudioOptions()) -> list[Example]:
    """The tasks of a Label Studio JSON export (a list of tasks), in file order. A task with no
    annotation to take (none, only cancelled ones, none by `annotator`) has `gold` None. What a
    gold annotation is follows `result_kind`: entity spans from `labels` regions, or class names
    from `choices`."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        bad(f"{path}", f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")
        return []
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text: {error}") from None
    if isinstance(tasks, dict):  # one task saved alone
        tasks = [tasks]
    if not isinstance(tasks, list):
        bad(f"{path}", f"expected a list of tasks (Label Studio's JSON export), found {kind(tasks)}")
        return []
    result_type = result_kind(path, tasks, options)
    examples = []
    for index, task in enumerate(tasks, 1):
        example = _label_studio_task(task, f"{path}:task {index}", bad, options, result_type)
        if example is not None:
            examples.append(example)
    return examples


def _results(tasks: Sequence[Any]) -> Iterable[dict[str, Any]]:
    """Every result object of every annotation of `tasks` (malformed ones are reported when read)."""
    for task in tasks:
        annotations = task.get("annotations") if isinstance(task, dict) else None
        for annotation in annotations if isinstance(annotations, list) else ():
            results = annotation.get("result") if isinstance(annotation, dict) else None
            for result in results if isinstance(results, list) else ():
                if isinstance(result, dict):
                    yield result


def result_kind(path: Path, tasks: Sequence[Any], options: LabelStudioOptions) -> str:
    """What to read from an export: `options.result_type` when it is not "auto"; else the type of
    the results the file holds (of the control `from_name` when set): `choices` when it holds
    choices and no `labels` region, `labels` otherwise. A file holding both (a project labelling
    entities and classifying texts), or choices of several controls, is an error asking which."""
    controls: dict[str, dict[str, int]] = {"labels": {}, "choices": {}}
    others: set[str] = set()  # the controls `from_name` did not name
    for result in _results(tasks):
        kind_ = result.get("type", "labels")
        name = result.get("from_name")
        if kind_ in controls and "value" in result:
            if options.from_name is not None and name != options.from_name:
                others.add(str(name))
                continue
            counts = controls[kind_]
            counts[str(name)] = counts.get(str(name), 0) + 1
    if options.from_name is not None and others and not controls["labels"] and not controls["choices"]:
        raise DataError(f"{path}: no result of control {options.from_name!r} (from_name); its controls: {', '.join(sorted(others))}")
    if options.result_type != "auto":
        return options.result_type

    def shown(kind_: str) -> str:
        return ", ".join(f"{name!r} ({count})" for name, count in controls[kind_].items())

    if controls["labels"] and controls["choices"]:
        raise DataError(
            f"{path}: holds both entity regions (labels results of control {shown('labels')}) and classes (choices "
            f"results of control {shown('choices')}); say which to read: result_type = \"labels\" or \"choices\", "
            "or from_name = the control's name (dataset.result_type / dataset.from_name in a recipe; "
            "--option result_type=... in nlpfw convert)"
        )
    if len(controls["choices"]) > 1:
        raise DataError(
            f"{path}: holds the choices of several controls ({shown('choices')}); say which to read with from_name "
            "(dataset.from_name in a recipe; --option from_name=... in nlpfw convert)"
        )
    return "choices" if controls["choices"] else "labels"


def _label_studio_task(task: Any, where: str, bad: Bad, options: LabelStudioOptions, result_type: str = "labels") -> Example | None:
    if not isinstance(task, dict):
        return bad(where, f"expected a task object, found {kind(task)}")
    if task.get("id") is not None:
        where = f"{where} (id {task['id']})"
    data = task.get("data")
    if not isinstance(data, dict):
        return bad(where, f"no 'data' object (found {kind(data)})")
    text = data.get(options.text_field)
    if not isinstance(text, str):
        found = ", ".join(sorted(k for k, v in data.items() if isinstance(v, str))) or "none"
        return bad(where, f"no string data.{options.text_field} (string fields: {found}); set "
                          f"dataset.text_field to the field your labeling config's <Text value=\"$...\"> names")  # fmt: skip
    task_id = data.get("id", task.get("id"))
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        return bad(where, f"'annotations' must be a list, found {kind(annotations)}")
    annotation = choose_annotation(annotations, options)
    if annotation is None:
        return Example(text, None, task_id)
    if annotation.get("id") is not None:
        where = f"{where} annotation {annotation['id']}"
    results = annotation.get("result", [])
    if not isinstance(results, list):
        return bad(where, f"'result' must be a list, found {kind(results)}")
    spans: set[Span] = set()
    classes: list[str] = []
    for number, result in enumerate(results, 1):
        if not isinstance(result, dict) or result.get("type", "labels") != result_type or "value" not in result:
            continue  # the other kind, relations, text areas
        if options.from_name is not None and result.get("from_name") != options.from_name:
            continue
        at = f"{where} result {result.get('id', number)}"
        if result_type == "choices":
            classes.extend(_label_studio_choices(result, at, bad))
        else:
            spans |= _label_studio_spans(text, result, at, bad, options)
    if result_type == "choices":
        return Example(text, list(dict.fromkeys(classes)), task_id)  # no choice: the annotator chose none
    return Example(text, sorted(spans), task_id)


def _label_studio_choices(result: dict[str, Any], where: str, bad: Bad) -> list[str]:
    """The class names of one `choices` result (`value.choices`)."""
    value = result["value"]
    choices = value.get("choices") if isinstance(value, dict) else None
    if not (isinstance(choices, list) and choices and all(isinstance(x, str) and x.strip() for x in choices)):
        bad(where, f"value.choices must be a non-empty list of class names, found {json.dumps(choices, ensure_ascii=False)}")
        return []
    return [x.strip() for x in choices]


def _label_studio_spans(text: str, result: dict[str, Any], where: str, bad: Bad, options: LabelStudioOptions) -> set[Span]:
    value = result["value"]
    report: Callable[[str], None] = lambda message: bad(where, message)  # noqa: E731
    if not isinstance(value, dict):
        report(f"'value' must be an object, found {kind(value)}")
        return set()
    labels = value.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x for x in labels)):
        report(f"value.labels must be a non-empty list of label names, found {json.dumps(labels, ensure_ascii=False)}")
        return set()
    start, end = value.get("start"), value.get("end")
    shown = f"{'/'.join(labels)} span [{start}, {end})"
    if not is_int(start) or not is_int(end):
        report(f"{shown}: value.start and value.end must be integers")
        return set()
    converted = to_codepoints(text, start, end, options.offsets)
    if converted is None:
        report(f"{shown} splits a character in two (UTF-16 offsets inside a surrogate pair)")
        return set()
    start, end = converted
    surface = value.get("text")
    fits = 0 <= start < end <= len(text) and (surface is None or text[start:end] == surface)
    if not fits and surface is not None:  # exports of old versions count UTF-16 code units
        other: Offsets = "utf16" if options.offsets == "codepoints" else "codepoints"
        again = to_codepoints(text, value["start"], value["end"], other)
        if again is not None and 0 <= again[0] < again[1] <= len(text) and text[again[0] : again[1]] == surface:
            hint = f"; the offsets match as {other} (set dataset.offsets = \"{other}\")"
            where_ok = text[start:end] if 0 <= start < end <= len(text) else None
            shown_text = f"{where_ok!r} in the text" if where_ok is not None else f"out of range for a text of {len(text)} characters"
            report(f"{shown} is {shown_text}, not value.text {surface!r}{hint}")
            return set()
    if not check_span(text, start, end, shown, report):
        return set()
    if surface is not None and text[start:end] != surface:
        report(f"{shown} is {text[start:end]!r} in the text, not value.text {surface!r}")
        return set()
    return {Span(start, end, label) for label in labels}


CHOICES_NAMES = ("sentiment", "text")  # Label Studio's Text Classification template: <Choices name="sentiment" toName="text">


def label_studio_result(text: str, span: Span, key: str, score: float | None = None,
                        names: tuple[str, str] = ("label", "text")) -> dict[str, Any]:  # fmt: skip
    """One `labels` region of a Label Studio result list."""
    result: dict[str, Any] = {
        "id": key, "from_name": names[0], "to_name": names[1], "type": "labels",
        "value": {"start": span.start, "end": span.end, "text": text[span.start : span.end], "labels": [span.label]},
    }  # fmt: skip
    if score is not None:
        result["score"] = score
    return result


def label_studio_choices(labels: Sequence[str], key: str, score: float | None = None,
                         names: tuple[str, str] = CHOICES_NAMES) -> dict[str, Any]:  # fmt: skip
    """One `choices` result of a Label Studio result list (the classes of a whole text)."""
    result: dict[str, Any] = {"id": key, "from_name": names[0], "to_name": names[1], "type": "choices",
                              "value": {"choices": list(labels)}}  # fmt: skip
    if score is not None:
        result["score"] = score
    return result


def label_studio_tasks(
    examples: Sequence[Example],
    predicted: Sequence[ScoredSpans | ScoredClasses] | None = None,
    model_version: str = "nlpfw",
    text_field: str = "text",
    from_name: str | None = None,
    to_name: str = "text",
) -> list[dict[str, Any]]:
    """Label Studio tasks (`[{"data": {text_field: ...}, ...}]`, importable as they are): gold
    spans or classes as an `annotations` entry, `predicted` ones as `predictions`
    (pre-annotations) with `model_version`, the text's `score` and a `score` per region or
    choice. Results name the labeling config's control `from_name` and object `to_name`; by
    default those of Label Studio's *Named Entity Recognition* template (`<Labels name="label"
    toName="text">`) for regions and of its *Text Classification* template (`<Choices
    name="sentiment" toName="text">`) for choices."""
    region_names = (from_name or "label", to_name)
    choice_names = (from_name or CHOICES_NAMES[0], to_name)

    def result_list(text: str, gold: Any, key: str) -> list[dict[str, Any]]:
        if is_classes(gold):
            return [label_studio_choices(gold, f"{key}0", names=choice_names)]
        return [label_studio_result(text, span, f"{key}{k}", names=region_names) for k, span in enumerate(gold)]

    tasks = []
    for index, example in enumerate(examples):
        data: dict[str, Any] = {text_field: example.text}
        if example.id is not None:
            data["id"] = example.id
        task: dict[str, Any] = {"data": data}
        if example.gold is not None:
            task["annotations"] = [{"result": result_list(example.text, example.gold, f"t{index}a")}]
        if predicted is not None:
            scored = predicted[index]
            if isinstance(scored, ScoredClasses):
                result = [label_studio_choices(scored.labels, f"t{index}p0", scored.score, choice_names)] if scored.labels else []
            else:
                scores = scored.scores or [None] * len(scored.spans)
                result = [label_studio_result(example.text, s, f"t{index}p{k}", score, region_names)
                          for k, (s, score) in enumerate(zip(scored.spans, scores))]  # fmt: skip
            prediction: dict[str, Any] = {"model_version": model_version, "result": result}
            if scored.score is not None:
                prediction["score"] = scored.score
            task["predictions"] = [prediction]
        tasks.append(task)
    return tasks


# --- doccano ----------------------------------------------------------------------------------


CLASS_KEYS = ("label", "labels")  # doccano's text-classification label list, by version


def read_doccano(path: Path, bad: Bad, offsets: Offsets = "utf16", labelled: bool = True, project: Project = "auto") -> list[Example]:
    """The lines of a doccano JSONL export, of a sequence-labelling project (`{"text", "label":
    [[start, end, TYPE], ...]}`, the older `labels` key, or, from projects with relations,
    `entities`: `[{"start_offset", "end_offset", "label"}]`) or of a text-classification
    project (`{"text", "label": [CLASS, ...]}`, the older `labels` key, or one class as a
    string). `project` says which; "auto": the kind of the first line with a non-empty label,
    sequence labelling when none has one; a line of the other kind is bad data. A line with no
    label key has `gold` None, which in a labelled split (`labelled`) is bad data; in a
    classification export so has `"label": []` (doccano writes it for a text nobody labelled),
    which train and dev leave out as Label Studio's unlabelled tasks."""
    lines: list[tuple[str, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                record = _doccano_record(line, f"{path}:{number}", bad)
                if record is not None:
                    lines.append((f"{path}:{number}", record))
    first: tuple[str, str] | None = None  # (the kind, the line that showed it)
    if project == "auto":
        for where, record in lines:
            found = _doccano_kind(record)
            if found is not None:
                first = (found, where.rsplit(":", 1)[1])
                break
        project = first[0] if first is not None else "sequence_labeling"  # type: ignore[assignment]
    examples = []
    for where, record in lines:
        found = _doccano_kind(record)
        if found is not None and found != project:
            key = next(k for k in (*CLASS_KEYS, "entities") if k in record)
            held = "categories" if found == "text_classification" else "entity spans"
            shown = repr(record[key])[:60]
            other = (f"line {first[1]} holds entity spans (sequence labelling)" if first is not None
                     else "dataset.project is \"sequence_labeling\"") if found == "text_classification" else (
                f"line {first[1]} holds categories (text classification)" if first is not None
                else "dataset.project is \"text_classification\"")  # fmt: skip
            kind_name = "a text-classification export" if found == "text_classification" else "a sequence-labelling export"
            bad(where, f"{key!r} holds {held} {shown}: {kind_name}, but {other}; one file is one project's export")
            continue
        reader = _doccano_classes if project == "text_classification" else _doccano_spans
        example = reader(record, where, bad, offsets, labelled)
        if example is not None:
            examples.append(example)
    return examples


def _doccano_kind(record: dict[str, Any]) -> str | None:
    """A line's project type from its labels: categories (strings, or one string) or spans;
    None when it has none to tell by (no label key, an empty list)."""
    for key in SPAN_KEYS:
        items = record.get(key)
        if isinstance(items, str) and items.strip():
            return "text_classification"
        if isinstance(items, list) and items:
            return "text_classification" if any(isinstance(item, str) for item in items) else "sequence_labeling"
    return None


def _doccano_record(line: str, where: str, bad: Bad) -> dict[str, Any] | None:
    try:
        record = json.loads(line.rstrip())
    except json.JSONDecodeError as error:
        return bad(where, f"not valid JSON: {error.msg} at column {error.colno}")
    if not isinstance(record, dict):
        return bad(where, f"expected a JSON object, found {kind(record)}")
    text = record.get("text", record.get("data"))
    if not isinstance(text, str):
        return bad(where, f"no string 'text' (found {kind(text)})")
    record["text"] = text
    return record


def _doccano_classes(record: dict[str, Any], where: str, bad: Bad, offsets: Offsets, labelled: bool) -> Example | None:
    text = record["text"]
    keys = [k for k in CLASS_KEYS if k in record]
    if len(keys) > 1:
        return bad(where, f"has both {keys[0]!r} and {keys[1]!r}; a doccano line has one")
    if not keys:
        if labelled:
            return bad(where, "no 'label' (a train or dev line needs one; 'label': [] for a text nobody labelled)")
        return Example(text, None, record.get("id"))
    if record[keys[0]] == []:  # doccano's export of a text nobody labelled: left out of train and dev
        return Example(text, None, record.get("id"))
    items = record[keys[0]]
    items = [items] if isinstance(items, str) else items
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
        return bad(where, f"{keys[0]!r} must be a list of class names (or one name), found "
                          f"{json.dumps(record[keys[0]], ensure_ascii=False)}")  # fmt: skip
    return Example(text, list(dict.fromkeys(item.strip() for item in items)), record.get("id"))  # several annotators may repeat one


def _doccano_spans(record: dict[str, Any], where: str, bad: Bad, offsets: Offsets, labelled: bool) -> Example | None:
    text = record["text"]
    keys = [k for k in SPAN_KEYS if k in record]
    if len(keys) > 1:
        return bad(where, f"has both {keys[0]!r} and {keys[1]!r}; a doccano line has one")
    if not keys:
        if labelled:
            return bad(where, "no 'label' (a train or dev line needs one; 'label': [] for a text without entities)")
        return Example(text, None, record.get("id"))
    items = record[keys[0]]
    if not isinstance(items, list):
        return bad(where, f"{keys[0]!r} must be a list of [start, end, TYPE], found {kind(items)}")
    spans = set()
    report: Callable[[str], None] = lambda message: bad(where, message)  # noqa: E731
    for item in items:
        if isinstance(item, dict) and keys[0] == "entities":
            start, end, label = item.get("start_offset"), item.get("end_offset"), item.get("label")
        elif isinstance(item, list) and len(item) == 3:
            start, end, label = item
        else:
            report(f"malformed span {json.dumps(item, ensure_ascii=False)}: expected [start, end, \"TYPE\"]")
            continue
        shown = f"{label} span [{start}, {end})"
        if not isinstance(label, str) or not label:
            report(f"malformed span {json.dumps(item, ensure_ascii=False)}: the type must be a non-empty string")
            continue
        if not is_int(start) or not is_int(end):
            report(f"{shown}: start and end must be integers")
            continue
        converted = to_codepoints(text, start, end, offsets)
        if converted is None:
            report(f"{shown} splits a character in two (UTF-16 offsets inside a surrogate pair)")
            continue
        if check_span(text, *converted, shown, report):
            spans.add(Span(converted[0], converted[1], label))
    return Example(text, sorted(spans), record.get("id"))


def doccano_records(
    examples: Sequence[Example], offsets: Offsets = "utf16", predicted: Sequence[ScoredSpans | ScoredClasses] | None = None
) -> list[dict[str, Any]]:
    """doccano JSONL records (its import and export form), with `id` when the example has one:
    entity spans as a sequence-labelling project's `{"text", "label": [[start, end, TYPE],
    ...]}` in `offsets` units, classes as a text-classification project's `{"text", "label":
    [CLASS, ...]}`; a text without labels has no `label`. With `predicted`, those are the labels,
    and confidences go in fields doccano keeps as metadata (`confidence`; `entity_confidence`
    for spans, `scores`, each class's probability, for classes)."""
    records = []
    for index, example in enumerate(examples):
        record: dict[str, Any] = {}
        if example.id is not None:
            record["id"] = example.id
        record["text"] = example.text
        scored = predicted[index] if predicted is not None else None
        if isinstance(scored, ScoredClasses):
            record["label"] = list(scored.labels)
            if scored.score is not None:
                record["confidence"] = scored.score
            if scored.scores is not None:
                record["scores"] = scored.scores
        elif scored is not None:
            record["label"] = [[*from_codepoints(example.text, s, offsets), s.label] for s in scored.spans]
            if scored.score is not None:
                record["confidence"] = scored.score
                record["entity_confidence"] = scored.scores
        elif example.gold is not None:
            if is_classes(example.gold):
                record["label"] = list(example.gold)
            else:
                record["label"] = [[*from_codepoints(example.text, s, offsets), s.label] for s in example.gold]
        records.append(record)
    return records


# --- CLUENER, JSON spans, CoNLL, plain text ----------------------------------------------------


def cluener_records(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """CLUENER2020 lines: `{"text", "label": {TYPE: {surface: [[start, end], ...]}}}`, end inclusive."""
    records = []
    for example in examples:
        record: dict[str, Any] = {} if example.id is None else {"id": example.id}
        record["text"] = example.text
        if example.gold is not None:
            label: dict[str, dict[str, list[list[int]]]] = {}
            for span in example.gold:
                label.setdefault(span.label, {}).setdefault(span.text_in(example.text), []).append([span.start, span.end - 1])
            record["label"] = label
        records.append(record)
    return records


def spans_records(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """`jsonl_spans.v1` lines: `{"text", "spans": [{"start", "end", "label", "text"}]}`, end exclusive."""
    records = []
    for example in examples:
        record: dict[str, Any] = {} if example.id is None else {"id": example.id}
        record["text"] = example.text
        if example.gold is not None:
            record["spans"] = [{"start": s.start, "end": s.end, "label": s.label, "text": s.text_in(example.text)}
                               for s in example.gold]  # fmt: skip
        records.append(record)
    return records


def flat(spans: Iterable[Span]) -> tuple[list[Span], list[Span]]:
    """(the spans flat tags can hold, longest first; the rest), as `ner.v1` keeps them."""
    kept: list[Span] = []
    dropped: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start, s.label)):
        (dropped if any(span.start < k.end and k.start < span.end for k in kept) else kept).append(span)
    return sorted(kept), dropped


def conll_text(examples: Sequence[Example], scheme: Scheme = "BIO") -> tuple[str, int]:
    """CoNLL: a character and its tag a line (tab-separated), a blank line between texts; and the
    number of spans left out because they overlap a longer one. Texts without labels or empty
    ones cannot be written; a text holding a line break or a tab is an error."""
    blocks, dropped = [], 0
    for number, example in enumerate(examples, 1):
        if example.gold is None or not example.text:
            continue
        bad = next((c for c in example.text if c in "\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029"), None)
        if bad is not None:
            raise DataError(f"text {number} holds {bad!r}, which CoNLL (one character a line) cannot hold")
        kept, left_out = flat(example.gold)
        dropped += len(left_out)
        tags = write_tags(len(example.text), kept, scheme)
        blocks.append("".join(f"{c}\t{t}\n" for c, t in zip(example.text, tags)))
    return "\n".join(blocks), dropped


# --- splitting one export into train and dev ---------------------------------------------------


def in_dev(text: str, share: float, seed: int) -> bool:
    """Whether `text` goes to dev: a seeded hash of the text, so a text stays in its split as the
    export grows from round to round, and copies of a text never sit in both."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_examples(examples: Sequence[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev) of one export, in file order."""
    train: list[Example] = []
    dev: list[Example] = []
    for example in examples:
        (dev if in_dev(example.text, share, seed) else train).append(example)
    return train, dev


# --- files ------------------------------------------------------------------------------------


def json_lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def json_list(records: Iterable[dict[str, Any]]) -> str:
    """A JSON list, one record a line (as Label Studio imports and exports tasks)."""
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"
