"""A run folder's reports, built from its files alone (report.json, metrics.jsonl, plugins.json):

    report.txt     the three result tables of the best epoch, as plain text
    report.md      the same tables in Markdown with the reference columns, the epochs, the plots
    curves.png     loss and the dev summary scores by epoch
    labels.png     the per-label dev score beside the reference columns (per entity type for
                   NER, per class for a classifier)

Every task's evaluation records carry the same fields (`nlpfw.interfaces.Evaluation`), so
these reports know no task.

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
from nlpfw.plots import plot_curves, plot_labels
from nlpfw.report import (
    evaluation_fields,
    format_duration,
    format_number,
    metric_title,
    render_markdown,
    render_text,
    result_tables,
)

REPORT_FILES = ("report.txt", "report.md", "curves.png", "labels.png")


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
        return evaluation_fields(self.report["best"])

    @property
    def records(self) -> list[dict[str, Any]]:
        return [evaluation_fields(r) for r in self.epochs]

    @property
    def labels(self) -> list[str]:
        """The labels scored (entity types, classes), in the task's order, without "overall"."""
        return [label for label in self.best["per_label"] if label != "overall"]

    @property
    def reference(self) -> Reference | None:
        saved = self.report.get("reference")
        if not saved:
            return None
        saved = dict(saved)
        if "entities" in saved:  # report.json from before per-label references had a task-neutral name
            saved["per_label"] = saved.pop("entities")
        return Reference(**saved)


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
    main = best["main"]
    return f"{run.report['recipe']}: best dev {metric_title(main['name'])} {main['value']:.4f} at epoch {best['epoch']}"


def write_reports(directory: str | Path) -> list[Path]:
    """Write report.txt, report.md and the two plots from the run folder's files; return their paths."""
    run = read_run(directory)
    tables = result_tables(run.best, run.reference)
    paths = [run.directory / name for name in REPORT_FILES]
    io.write_text(paths[0], f"{headline(run)}\nmetric: {run.report['metric']}\n\n{render_text(tables)}")
    plot_curves(run.records, paths[2], title=run.report["recipe"])
    best = run.best
    plot_labels(best, run.reference, paths[3],
                title=f"{run.report['recipe']}: per-{best['label_kind']} {metric_title(best['per_label_metric'])} (dev), "
                      f"best epoch {best['epoch']}")  # fmt: skip
    io.write_text(paths[1], markdown(run, tables))
    return paths


def markdown(run: RunFiles, tables: list[Table]) -> str:
    report, env, best = run.report, run.environment, run.best
    stopped = ", stopped early" if report.get("stopped_early") else ""
    keys = list(best["summary"])
    main = best["main"]["name"]
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
        "| epoch | train loss | dev loss | " + " | ".join(metric_title(k) for k in keys) + " | train_epoch_time | valid_epoch_time |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in keys) + " | ---: | ---: |",
    ]
    for r in run.records:
        speed = r.get("speed", {})
        cells = []
        for key in keys:
            value = f"{r['summary'][key]:.4f}"
            cells.append(f"**{value}**" if key == main and r["epoch"] == best["epoch"] else value)
        lines.append(
            f"| {r['epoch']} | {format_number(r.get('train_loss'))} | {format_number(r.get('dev_loss'))} | "
            + " | ".join(cells)
            + f" | {format_duration(speed.get('train_epoch_time'))} | {format_duration(speed.get('valid_epoch_time'))} |"
        )
    kind, metric = best["label_kind"], metric_title(best["per_label_metric"])
    lines += ["", f"## Per-{kind} {metric} beside the reference", "", f"![per-{kind} {metric}](labels.png)", ""]
    return "\n".join(lines)


def compare_table(runs: list[RunFiles]) -> Table:
    """Runs side by side: summary scores, timings, then the per-label score (x100); the best
    in bold. Runs of different tasks show each one's own scores ("-" where a run has none)."""
    table = Table(title="Runs compared (dev, best epoch of each)")
    table.add_column("", no_wrap=True)
    for run in runs:
        table.add_column(f"{run.name}\n{run.report['recipe']}", justify="right", overflow="fold")
    bests = [run.best for run in runs]
    keys: list[str] = []
    for best in bests:
        keys += [k for k in best["summary"] if k not in keys]
    higher = {b["main"]["name"]: b["main"].get("higher_is_better", True) for b in bests}
    rows: list[tuple[str, list[float | None], str, bool]] = [  # label, values, format, higher is better
        *((metric_title(k), [b["summary"].get(k) for b in bests], "{:.4f}", higher.get(k, True)) for k in keys),
        ("dev loss", [b.get("dev_loss") for b in bests], "{:.4f}", False),
    ]
    for label, values, form, up in rows:
        table.add_row(label, *_marked(values, form, up))
    table.add_row("best epoch", *(f"{run.best['epoch']} of {run.report.get('epochs_run', len(run.epochs))}" for run in runs))
    table.add_row("train_epoch_time", *(format_duration(b.get("speed", {}).get("train_epoch_time")) for b in bests))
    table.add_row("device", *(str(b.get("device", "-")) for b in bests), end_section=True)
    labels: list[str] = []
    for run in runs:
        labels += [label for label in run.labels if label not in labels]
    for label in labels:
        values = [(b["per_label"].get(label) or {}).get(b["per_label_metric"]) for b in bests]
        table.add_row(label, *_marked([None if v is None else v * 100 for v in values], "{:.2f}", True))
    return table


def _marked(values: list[float | None], form: str, higher: bool) -> list[str]:
    present = [v for v in values if v is not None]
    best = (max if higher else min)(present) if len(present) > 1 else None
    return ["-" if v is None else (f"[bold]{form.format(v)}[/]" if v == best else form.format(v)) for v in values]
