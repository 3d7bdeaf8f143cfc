"""The three result tables of an evaluation (speed, the task's summary scores, its per-label
scores), with published columns beside ours. Built from the evaluation record alone (the
task's `Evaluation` fields), so every task gets them and a run folder's files rebuild them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from nlpfw.interfaces import Reference

SPEED_KEYS = ("train_step_time", "train_epoch_time", "valid_step_time", "valid_epoch_time")


def evaluation_fields(record: dict[str, Any]) -> dict[str, Any]:
    """An evaluation record's task-neutral fields: `main`, `summary`, `per_label`,
    `per_label_metric`, `label_kind`, `metric`. Records written before tasks described their
    own scores are NER records (exact-span P/R/F1 in `scores`); they are read as such."""
    if "summary" in record:
        return record
    scores = record["scores"]
    overall = scores["overall"]
    return {
        **record,
        "main": {"name": "f1", "value": overall["f1"], "higher_is_better": True},
        "summary": {key: overall[key] for key in ("precision", "recall", "f1")},
        "per_label": {**scores.get("by_type", {}), "overall": overall},
        "per_label_metric": "f1",
        "label_kind": "entity",
        "metric": record.get("metric", ""),
    }


def metric_title(name: str) -> str:
    """`f1` -> `F1`, `macro_f1` -> `macro-F1`, `accuracy` -> `accuracy`."""
    return name.replace("_", "-").replace("f1", "F1")


def format_duration(seconds: float | None) -> str:
    """`182 ms`, `3.0 s`, `1m21s`, `2h01m50s`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def speed_table(speed: dict[str, float], device: str, reference: Reference | None) -> Table:
    """One row per timing, one column per device (ours first), so it fits a narrow terminal."""
    devices = {f"ours: {device}": speed, **(reference.speed if reference else {})}
    caption = f"reference columns: {reference.speed_setup}" if reference and reference.speed_setup else None
    table = Table(title="Speed", caption=caption)
    table.add_column("timing", no_wrap=True)
    for i, name in enumerate(devices):
        table.add_column(name, justify="right", overflow="fold", style=None if i == 0 else "dim")
    for key in SPEED_KEYS:
        table.add_row(key, *(format_duration(row.get(key)) for row in devices.values()))
    return table


def model_table(record: dict[str, Any], reference: Reference | None) -> Table:
    """The summary scores and the dev loss of one evaluation, published rows below ours."""
    record = evaluation_fields(record)
    keys = list(record["summary"])
    table = Table(title="Model (dev)", caption=record.get("metric") or None)
    table.add_column("system")
    for key in [*keys, "loss"]:
        table.add_column(key, justify="right")
    table.add_row("ours", *(f"{record['summary'][k]:.4f}" for k in keys), format_number(record.get("dev_loss")))
    for name, row in (reference.model if reference else {}).items():
        table.add_row(name, *(format_number(row.get(k)) for k in [*keys, "loss"]), style="dim")
    return table


def label_table(record: dict[str, Any], reference: Reference | None) -> Table:
    """The per-label score (x100, as published) with our support, then the reference columns;
    the overall row last."""
    record = evaluation_fields(record)
    kind, metric = record["label_kind"], record["per_label_metric"]
    columns = reference.per_label if reference else {}
    table = Table(title=f"Per-{kind} {metric_title(metric)} (dev)", caption=f"reference: {reference.source}" if reference else None)
    table.add_column(kind, no_wrap=True)
    table.add_column("ours", justify="right")
    table.add_column("support", justify="right")
    for name in columns:
        table.add_column(name, justify="right", style="dim", overflow="fold")
    labels = [label for label in record["per_label"] if label != "overall"]
    rows = [*labels, "overall"] if "overall" in record["per_label"] else labels
    for label in rows:
        ours = record["per_label"].get(label)
        table.add_row(
            label,
            f"{ours[metric] * 100:.2f}" if ours else "-",
            str(int(ours["support"])) if ours and "support" in ours else "0",
            *(_pct(col.get(label)) for col in columns.values()),
            end_section=bool(labels) and label == labels[-1],
        )
    return table


def result_tables(record: dict[str, Any], reference: Reference | None) -> list[Table]:
    """The three tables for one evaluation record (as written to metrics.jsonl): speed, the
    summary scores, the per-label scores."""
    return [
        speed_table(record["speed"], record["device"], reference),
        model_table(record, reference),
        label_table(record, reference),
    ]


def render_text(tables: Sequence[Table], width: int = 120) -> str:
    """Tables as plain text, for report files."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    for table in tables:
        console.print(table)
    return buffer.getvalue()


def render_markdown(table: Table) -> str:
    """One result table as a Markdown table under a `###` heading, its caption below it."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    columns = table.columns
    rows = list(zip(*(list(column.cells) for column in columns)))
    align = {"right": "---:", "center": ":---:"}
    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(cell(c.header) for c in columns) + " |")
    lines.append("| " + " | ".join(align.get(c.justify, "---") for c in columns) + " |")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if table.caption:
        lines += ["", f"*{cell(table.caption)}*"]
    return "\n".join(lines) + "\n"


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"
