"""A run's plots as PNG files: loss and the dev scores by epoch, and the per-label score (per
entity type, per class) beside the reference. Both read evaluation records alone.

matplotlib draws on its Agg canvas directly (no pyplot, so no GUI backend and no global figure
state); each file has a fixed pixel size and is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlpfw import io
from nlpfw.interfaces import Reference

DPI = 100
CURVES_SIZE = (1000, 400)  # pixels: loss on the left, dev scores on the right
LABELS_SIZE = (1200, 500)


def _figure(size: tuple[int, int]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    io.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))


def plot_curves(epochs: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train and dev loss, and the dev summary scores, by epoch; the best epoch's main score
    marked. `epochs`: evaluation records with the task-neutral fields (`nlpfw.report.evaluation_fields`)."""
    from nlpfw.report import metric_title

    figure = _figure(CURVES_SIZE)
    loss_axes, score_axes = figure.subplots(1, 2)
    x = [r["epoch"] for r in epochs]
    loss_axes.plot(x, [r.get("train_loss") for r in epochs], marker="o", label="train loss")
    if any(r.get("dev_loss") is not None for r in epochs):
        loss_axes.plot(x, [r.get("dev_loss") for r in epochs], marker="o", label="dev loss")
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="loss")
    main = epochs[0]["main"]["name"]
    higher = epochs[0]["main"].get("higher_is_better", True)
    styles = iter((":", "--", "-.", (0, (1, 3)), (0, (5, 1))))
    for key in epochs[0]["summary"]:
        score_axes.plot(x, [r["summary"][key] for r in epochs], "-" if key == main else next(styles, ":"),
                        marker="o", label=f"dev {metric_title(key)}", linewidth=2 if key == main else 1)  # fmt: skip
    best = (max if higher else min)(epochs, key=lambda r: r["summary"][main])
    value = best["summary"][main]
    score_axes.plot([best["epoch"]], [value], "*", color="black", markersize=12, zorder=3)
    score_axes.annotate(f"best {value:.4f}", (best["epoch"], value), textcoords="offset points", xytext=(0, 10),
                        ha="center")  # fmt: skip
    score_axes.margins(y=0.15)  # room for the label above the best point
    score_axes.set(title="Dev scores", xlabel="epoch", ylabel="score")
    for axes in (loss_axes, score_axes):
        axes.grid(alpha=0.3)
        axes.legend()
        axes.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)


def plot_labels(record: dict[str, Any], reference: Reference | None, path: Path, title: str = "") -> None:
    """The per-label (and overall) dev score x100 of one evaluation record as bars, ours first,
    then each reference column."""
    from nlpfw.report import metric_title

    figure = _figure(LABELS_SIZE)
    axes = figure.subplots()
    metric = record["per_label_metric"]
    rows = list(record["per_label"])
    ours = {label: (record["per_label"].get(label) or {}).get(metric) for label in rows}
    columns = {"ours": ours, **(reference.per_label if reference else {})}
    width = 0.8 / len(columns)
    for i, (name, values) in enumerate(columns.items()):
        heights = [(values.get(label) or 0.0) * 100 for label in rows]
        positions = [k + (i - (len(columns) - 1) / 2) * width for k in range(len(rows))]
        bars = axes.bar(positions, heights, width, label=name, zorder=2,
                        color="black" if name == "ours" else None)  # fmt: skip
        if name == "ours":
            axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    axes.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
    label = f"{metric_title(metric)} (x100)"
    axes.set(ylabel=label, ylim=(0, 105), title=title or f"Per-{record['label_kind']} {metric_title(metric)} (dev)")
    axes.grid(axis="y", alpha=0.3, zorder=0)
    axes.legend(fontsize=8, ncols=min(len(columns), 6), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    figure.tight_layout()
    _save(figure, path)
