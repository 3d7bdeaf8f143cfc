"""A run folder's reports, built from its files alone (report.json, metrics.jsonl, plugins.json):

    report.txt     the three result tables of the best epoch, as plain text
    report.md      the same tables in Markdown with the reference columns, the epochs, the plots
    curves.png     loss and dev scores by epoch
    entities.png   per-entity dev F1 beside the reference columns

The runner writes them at the end of a run and `nlpfw report RUN_DIR` rebuilds them, so both
give the same files. `compare_table` puts several runs side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from nlpfw import io
from nlpfw.errors import NlpfwError
from nlpfw.interfaces import Reference
from nlpfw.plots import plot_curves, plot_entities
from nlpfw.report import format_duration, format_number, render_markdown, render_text, result_tables

REPORT_FILES = ("report.txt", "report.md", "curves.png", "entities.png")


@dataclass
class RunFiles:
    """What a finished run folder records."""

    directory: Path
    report: dict[str, Any]
    epochs: list[dict[str, Any]]
    environment: dict[str, Any]

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def best(self) -> dict[str, Any]:
        return self.report["best"]

    @property
    def entity_types(self) -> list[str]:
        # Runs from before report.json held them: the model's label map, else the scored types.
        if "entity_types" in self.report:
            return self.report["entity_types"]
        labels = self.directory / "model" / "labels.json"
        if labels.is_file():
            return _read_json(labels)["entity_types"]
        return sorted(self.best["scores"]["by_type"])

    @property
    def reference(self) -> Reference | None:
        saved = self.report.get("reference")
        return Reference(**saved) if saved else None


def read_run(directory: str | Path) -> RunFiles:
    """Read a finished run folder; a missing or damaged file is an error naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NlpfwError(f"{directory}: no such run folder")
    report_path = directory / "report.json"
    if not report_path.is_file():
        raise NlpfwError(f"{directory}: no report.json; is it a finished run folder (nlpfw run writes one at the end)?")
    report = _read_json(report_path)
    for key in ("recipe", "best", "best_epoch", "metric"):
        if key not in report:
            raise NlpfwError(f"{report_path}: key {key!r} is missing")
    metrics_path = directory / "metrics.jsonl"
    if not metrics_path.is_file():
        raise NlpfwError(f"{directory}: no metrics.jsonl (the per-epoch records)")
    epochs = []
    for number, line in enumerate(metrics_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                epochs.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise NlpfwError(f"{metrics_path}:{number}: not JSON ({error.msg})") from None
    if not epochs:
        raise NlpfwError(f"{metrics_path}: no epochs recorded")
    plugins = directory / "plugins.json"
    environment = _read_json(plugins).get("environment", {}) if plugins.is_file() else {}
    return RunFiles(directory, report, epochs, environment)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise NlpfwError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None


def headline(run: RunFiles) -> str:
    best = run.best
    return f"{run.report['recipe']}: best dev F1 {best['scores']['overall']['f1']:.4f} at epoch {best['epoch']}"


def write_reports(directory: str | Path) -> list[Path]:
    """Write report.txt, report.md and the two plots from the run folder's files; return their paths."""
    run = read_run(directory)
    tables = result_tables(run.best, run.entity_types, run.reference)
    paths = [run.directory / name for name in REPORT_FILES]
    io.write_text(paths[0], f"{headline(run)}\nmetric: {run.report['metric']}\n\n{render_text(tables)}")
    plot_curves(run.epochs, paths[2], title=run.report["recipe"])
    plot_entities(run.best["scores"], run.entity_types, run.reference, paths[3],
                  title=f"{run.report['recipe']}: per-entity F1 (dev), best epoch {run.best['epoch']}")  # fmt: skip
    io.write_text(paths[1], markdown(run, tables))
    return paths


def markdown(run: RunFiles, tables: list[Table]) -> str:
    report, env = run.report, run.environment
    stopped = ", stopped early" if report.get("stopped_early") else ""
    lines = [
        f"# {headline(run)}",
        "",
        f"Metric: {report['metric']}.",
        "",
        f"Epochs run: {report.get('epochs_run', len(run.epochs))}{stopped}. "
        + (f"Device: {env.get('device_name', env.get('device', '?'))}; nlpfw {env.get('nlpfw', '?')}, "
           f"torch {env.get('torch', '?')}, python {env.get('python', '?')}." if env else ""),  # fmt: skip
        "",
        "## Best epoch",
        "",
    ]
    for table in tables:
        lines += [render_markdown(table)]
    lines += [
        "## By epoch",
        "",
        "![loss and dev scores by epoch](curves.png)",
        "",
        "| epoch | train loss | dev loss | precision | recall | F1 | train_epoch_time | valid_epoch_time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in run.epochs:
        overall, speed = r["scores"]["overall"], r.get("speed", {})
        f1 = f"{overall['f1']:.4f}"
        lines.append(
            f"| {r['epoch']} | {format_number(r.get('train_loss'))} | {format_number(r.get('dev_loss'))} | {overall['precision']:.4f} "
            f"| {overall['recall']:.4f} | {f'**{f1}**' if r['epoch'] == run.best['epoch'] else f1} "
            f"| {format_duration(speed.get('train_epoch_time'))} | {format_duration(speed.get('valid_epoch_time'))} |"
        )
    lines += ["", "## Per-entity F1 beside the reference", "", "![per-entity F1](entities.png)", ""]
    return "\n".join(lines)


def compare_table(runs: list[RunFiles]) -> Table:
    """Runs side by side: overall scores, timings, then per-entity F1 (x100); the best in bold."""
    table = Table(title="Runs compared (dev, best epoch of each)")
    table.add_column("", no_wrap=True)
    for run in runs:
        table.add_column(f"{run.name}\n{run.report['recipe']}", justify="right", overflow="fold")
    overall = [run.best["scores"]["overall"] for run in runs]
    rows: list[tuple[str, list[float | None], str, bool]] = [  # label, values, format, higher is better
        ("precision", [o["precision"] for o in overall], "{:.4f}", True),
        ("recall", [o["recall"] for o in overall], "{:.4f}", True),
        ("F1", [o["f1"] for o in overall], "{:.4f}", True),
        ("dev loss", [run.best.get("dev_loss") for run in runs], "{:.4f}", False),
    ]
    for label, values, form, higher in rows:
        table.add_row(label, *_marked(values, form, higher))
    table.add_row("best epoch", *(f"{run.best['epoch']} of {run.report.get('epochs_run', len(run.epochs))}" for run in runs))
    table.add_row("train_epoch_time", *(format_duration(run.best.get("speed", {}).get("train_epoch_time")) for run in runs))
    table.add_row("device", *(str(run.best.get("device", "-")) for run in runs), end_section=True)
    entities: list[str] = []
    for run in runs:
        entities += [e for e in run.entity_types if e not in entities]
    for entity in entities:
        values = [(run.best["scores"]["by_type"].get(entity) or {}).get("f1") for run in runs]
        table.add_row(entity, *_marked([None if v is None else v * 100 for v in values], "{:.2f}", True))
    return table


def _marked(values: list[float | None], form: str, higher: bool) -> list[str]:
    present = [v for v in values if v is not None]
    best = (max if higher else min)(present) if len(present) > 1 else None
    return ["-" if v is None else (f"[bold]{form.format(v)}[/]" if v == best else form.format(v)) for v in values]
