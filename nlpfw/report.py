"""The seed's three result tables (speed, model, per-entity F1), with published columns beside ours."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from nlpfw.interfaces import Reference

SPEED_KEYS = ("train_step_time", "train_epoch_time", "valid_step_time", "valid_epoch_time")
METRIC_NOTES = {
    "strict": "strict entity-level matching: exact (type, start, end) spans, as seqeval's strict IOB2 mode",
    "conlleval": "entity-level matching of exact (type, start, end) spans, predicted tags read as conlleval "
    "does (an I-X after O starts an entity), as seqeval's default mode",
}


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


def model_table(
    overall: dict[str, float], loss: float | None, reference: Reference | None, scoring: str = "strict"
) -> Table:
    table = Table(title="Model (dev)", caption=METRIC_NOTES[scoring])
    table.add_column("system")
    for key in ("precision", "recall", "f1", "loss"):
        table.add_column(key, justify="right")
    table.add_row("ours", *(f"{overall[k]:.4f}" for k in ("precision", "recall", "f1")), format_number(loss))
    for name, row in (reference.model if reference else {}).items():
        table.add_row(name, *(format_number(row.get(k)) for k in ("precision", "recall", "f1", "loss")), style="dim")
    return table


def entity_table(scores: dict[str, Any], entity_types: Sequence[str], reference: Reference | None) -> Table:
    """Per-entity F1 (x100, as published) with our support, then the reference columns."""
    columns = reference.entities if reference else {}
    table = Table(title="Per-entity F1 (dev)", caption=f"reference: {reference.source}" if reference else None)
    table.add_column("entity", no_wrap=True)
    table.add_column("ours", justify="right")
    table.add_column("support", justify="right")
    for name in columns:
        table.add_column(name, justify="right", style="dim", overflow="fold")
    for entity in [*entity_types, "overall"]:
        ours = scores["overall"] if entity == "overall" else scores["by_type"].get(entity)
        table.add_row(
            entity,
            f"{ours['f1'] * 100:.2f}" if ours else "-",
            str(ours["support"]) if ours else "0",
            *(_pct(col.get(entity)) for col in columns.values()),
            end_section=entity == entity_types[-1] if entity_types else False,
        )
    return table


def result_tables(result: dict[str, Any], entity_types: Sequence[str], reference: Reference | None) -> list[Table]:
    """The three tables for one evaluation record (as written to metrics.jsonl)."""
    return [
        speed_table(result["speed"], result["device"], reference),
        model_table(result["scores"]["overall"], result.get("dev_loss"), reference, result.get("scoring", "strict")),
        entity_table(result["scores"], entity_types, reference),
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
