"""A run's plots as PNG files: loss and dev F1 by epoch, and per-entity F1 beside the reference.

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
ENTITIES_SIZE = (1200, 500)


def _figure(size: tuple[int, int]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    io.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))


def plot_curves(epochs: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train and dev loss, and dev precision/recall/F1, by epoch; the best epoch marked."""
    figure = _figure(CURVES_SIZE)
    loss_axes, score_axes = figure.subplots(1, 2)
    x = [r["epoch"] for r in epochs]
    loss_axes.plot(x, [r.get("train_loss") for r in epochs], marker="o", label="train loss")
    if any(r.get("dev_loss") is not None for r in epochs):
        loss_axes.plot(x, [r.get("dev_loss") for r in epochs], marker="o", label="dev loss")
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="loss")
    for key, style in (("precision", ":"), ("recall", "--"), ("f1", "-")):
        score_axes.plot(x, [r["scores"]["overall"][key] for r in epochs], style, marker="o",
                        label=f"dev {key}", linewidth=2 if key == "f1" else 1)  # fmt: skip
    best = max(epochs, key=lambda r: r["scores"]["overall"]["f1"])
    f1 = best["scores"]["overall"]["f1"]
    score_axes.plot([best["epoch"]], [f1], "*", color="black", markersize=12, zorder=3)
    score_axes.annotate(f"best {f1:.4f}", (best["epoch"], f1), textcoords="offset points", xytext=(0, 10),
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


def plot_entities(
    scores: dict[str, Any], entity_types: Sequence[str], reference: Reference | None, path: Path, title: str = ""
) -> None:
    """Per-entity (and overall) dev F1 x100 as bars, ours first, then each reference column."""
    figure = _figure(ENTITIES_SIZE)
    axes = figure.subplots()
    rows = [*entity_types, "overall"]
    ours = {e: (scores["overall"] if e == "overall" else scores["by_type"].get(e) or {}).get("f1") for e in rows}
    columns = {"ours": ours, **(reference.entities if reference else {})}
    width = 0.8 / len(columns)
    for i, (name, values) in enumerate(columns.items()):
        heights = [(values.get(e) or 0.0) * 100 for e in rows]
        positions = [k + (i - (len(columns) - 1) / 2) * width for k in range(len(rows))]
        bars = axes.bar(positions, heights, width, label=name, zorder=2,
                        color="black" if name == "ours" else None)  # fmt: skip
        if name == "ours":
            axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    axes.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
    axes.set(ylabel="F1 (x100)", ylim=(0, 105), title=title or "Per-entity F1 (dev)")
    axes.grid(axis="y", alpha=0.3, zorder=0)
    axes.legend(fontsize=8, ncols=min(len(columns), 6), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    figure.tight_layout()
    _save(figure, path)
