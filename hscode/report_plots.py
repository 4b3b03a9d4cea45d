"""Matplotlib figures of the accuracy report and their encoding as PNG."""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

FIGURE_SIZE = (6.0, 3.5)
"""Plot size in inches."""
FIGURE_DPI = 100

LEVEL_COLORS = {"heading": "#1f77b4", "subheading": "#ff7f0e"}
"""Colours per level. The study's bars reuse them, lighter and hatched."""


def _new_axes() -> tuple[Figure, Axes]:
    # A bare Figure needs no pyplot backend and is freed with its last
    # reference, so there is no figure registry to close.
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    return figure, figure.add_subplot()


def png(figure: Figure) -> bytes:
    """Encode the figure as PNG bytes."""
    buffer = io.BytesIO()
    # No "Software" tag, so the same report gives the same bytes.
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def plot_models(models: list[dict], labels: Sequence[str]) -> Figure | None:
    """Plot our heading and subheading top-1 as bars, the study's hatched beside.

    Args:
        models: model rows in the order the bars should appear.
        labels: tick label of each model, in the same order.
    """
    series = [
        ("heading_top1", "heading", "heading top-1", False),
        ("study_heading", "heading", "study heading", True),
        ("subheading_top1", "subheading", "subheading top-1", False),
        ("study_subheading", "subheading", "study subheading", True),
    ]
    plotted = [
        (m, tick)
        for m, tick in zip(models, labels, strict=True)
        if any(m.get(key) is not None for key, *_ in series)
    ]
    if not plotted:
        return None
    models = [m for m, _ in plotted]
    ticks = [tick for _, tick in plotted]

    figure, axes = _new_axes()
    x = np.arange(len(models))
    width = 0.8 / len(series)
    for index, (key, level, label, is_study) in enumerate(series):
        heights = [m.get(key) for m in models]
        present = [i for i, h in enumerate(heights) if h is not None]
        if not present:
            continue
        axes.bar(
            x[present] + (index - 1.5) * width,
            [heights[i] for i in present],
            width,
            label=label,
            color=LEVEL_COLORS[level],
            alpha=0.35 if is_study else 1.0,
            hatch="//" if is_study else None,
            edgecolor=LEVEL_COLORS[level],
        )
    _label_categories(axes, x, ticks)
    _format_accuracy_axis(axes, "top-1 accuracy")
    figure.legend(fontsize=7, ncols=4, loc="outside upper center")
    return figure


def plot_chapters(chapters: list[dict], labels: Sequence[str]) -> Figure | None:
    """Plot heading and subheading accuracy per chapter, one tick label each."""
    keys = ("heading_accuracy", "subheading_accuracy")
    if not any(c.get(k) is not None for c in chapters for k in keys):
        return None

    figure, axes = _new_axes()
    x = np.arange(len(chapters))
    for offset, key in ((-0.2, keys[0]), (0.2, keys[1])):
        present = [i for i, c in enumerate(chapters) if c.get(key) is not None]
        level = key.removesuffix("_accuracy")
        axes.bar(
            x[present] + offset,
            [chapters[i][key] for i in present],
            0.4,
            label=level,
            color=LEVEL_COLORS[level],
        )
    _label_categories(axes, x, labels)
    _format_accuracy_axis(axes, "accuracy")
    figure.legend(fontsize=8, ncols=2, loc="outside upper center")
    return figure


def plot_reliability(bins: list[dict]) -> Figure | None:
    """Plot accuracy against mean confidence per bin over a histogram of counts."""
    measured = ("lower", "upper", "confidence", "accuracy")
    bins = [
        b
        for b in bins
        if b.get("count") and all(b.get(k) is not None for k in measured)
    ]
    if not bins:
        return None

    figure, axes = _new_axes()
    counts_axes = axes.twinx()
    counts_axes.bar(
        [(b["lower"] + b["upper"]) / 2 for b in bins],
        [b["count"] for b in bins],
        [b["upper"] - b["lower"] for b in bins],
        color="#cccccc",
        edgecolor="white",
    )
    counts_axes.set_ylabel("declarations per bin (grey)", fontsize=8)
    counts_axes.tick_params(labelsize=7)
    # Draw the accuracy line above the histogram of the twin axes.
    axes.set_zorder(counts_axes.get_zorder() + 1)
    axes.patch.set_visible(False)

    axes.plot(
        [0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration"
    )
    axes.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o-",
        color=LEVEL_COLORS["heading"],
        label="heading accuracy",
    )
    axes.set_xlim(0, 1)
    axes.set_xlabel("mean heading confidence in bin", fontsize=8)
    axes.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    _format_accuracy_axis(axes, "accuracy")
    axes.legend(fontsize=8, loc="upper left")
    return figure


def plot_coverage(coverage: dict) -> Figure | None:
    """Plot heading precision against coverage, the target and the auto-accept point."""
    points = [
        p
        for p in coverage.get("points") or []
        if p.get("coverage") is not None and p.get("precision") is not None
    ]
    if not points:
        return None

    figure, axes = _new_axes()
    covered = [p["coverage"] for p in points]
    precision = [p["precision"] for p in points]
    axes.plot(
        covered, precision, color=LEVEL_COLORS["heading"], label="heading precision"
    )
    target = coverage.get("target_precision")
    if target is not None:
        axes.axhline(
            target,
            color="#d62728",
            linestyle="--",
            linewidth=1,
            label=f"target {target * 100:.4g}%",
        )
    share = coverage.get("auto_accept_share")
    if share is not None:
        # The points are sorted by coverage, as np.interp requires.
        at_share = float(np.interp(share, covered, precision))
        axes.plot(
            [share],
            [at_share],
            "o",
            color="#d62728",
            label=f"auto-accept {share * 100:.1f}%",
        )

    lowest = min(precision + ([target] if target is not None else []))
    axes.set_ylim(max(0.0, lowest - 0.02), 1.005)
    axes.set_xlim(0, 1)
    axes.set_xlabel("coverage: share of declarations auto-accepted", fontsize=8)
    axes.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    axes.set_ylabel("precision", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    return figure


def _label_categories(axes: Axes, x: np.ndarray, labels: Sequence[str]) -> None:
    axes.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)


def _format_accuracy_axis(axes: Axes, label: str) -> None:
    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    axes.set_ylabel(label, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(axis="y", alpha=0.3)
