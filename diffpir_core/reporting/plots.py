"""Report plots rendered with matplotlib (no pyplot, no display) into data URIs for self-contained pages.

Histograms are SVG (a few kB, sharp at any zoom); the shard timeline is a PNG, whose size does not
grow with the number of shards. Drawing cost is independent of the job size apart from one NumPy pass.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from diffpir_core.reporting.text import setting_label

RESTORED_COLOUR = "#1f6fb4"
BASELINE_COLOUR = "#d9822b"
PHASE_COLOURS = ("#9bb7d4", "#c9a0dc", "#1f6fb4", "#7fbf7f", "#d9822b", "#999999")


@dataclass(frozen=True)
class ShardTiming:
    """When one shard finished (Unix seconds) and its seconds per phase, in the order they ran."""

    shard: str
    finished_at: float
    phases: Mapping[str, float]


def histogram_uri(
    restored: Sequence[float], baseline: Sequence[float], *, title: str, restored_label: str, baseline_label: str
) -> str:
    """Two overlaid histograms on shared bins with their means marked, as an SVG data URI."""
    first, second = _finite(restored), _finite(baseline)
    both = np.concatenate([first, second])
    low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    count = int(np.clip(2 * np.sqrt(max(first.size, second.size, 1)), 8, 40))  # fewer, wider bins for small jobs
    bins = np.linspace(low, high if high > low else low + 1e-6, count + 1)
    figure = Figure(figsize=(5.2, 2.9), dpi=100)
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.9)  # fixed margins: a layout engine costs 0.4 s
    axes = figure.add_subplot()
    for values, label, colour in ((second, baseline_label, BASELINE_COLOUR), (first, restored_label, RESTORED_COLOUR)):
        if values.size:
            mean = float(values.mean())
            axes.hist(values, bins=bins, color=colour, alpha=0.55, label=f"{label} (mean {mean:.3g})")
            axes.axvline(mean, color=colour, linewidth=1.5)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel("images")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg_uri(figure)


def timeline_uri(timings: Sequence[ShardTiming]) -> str:
    """A Gantt chart of the shards (one line per shard, ordered by start, coloured by phase) as a PNG URI."""
    names = list(dict.fromkeys(name for timing in timings for name in timing.phases))
    durations = np.array([[timing.phases.get(name, 0.0) for name in names] for timing in timings], dtype=np.float64)
    ends = np.array([timing.finished_at for timing in timings], dtype=np.float64)
    starts = ends - durations.sum(axis=1)
    order = np.argsort(starts, kind="stable")
    starts, durations = starts[order] - starts.min(), durations[order]
    lanes = np.arange(len(timings))
    figure = Figure(figsize=(9.0, 3.2), dpi=100)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.84)
    axes = figure.add_subplot()
    width = float(np.clip(250.0 / max(len(timings), 1), 0.4, 8.0))
    left = starts.copy()
    for column, name in enumerate(names):
        right = left + durations[:, column]
        segments = np.stack([np.column_stack([left, lanes]), np.column_stack([right, lanes])], axis=1)
        colour = PHASE_COLOURS[column % len(PHASE_COLOURS)]
        axes.add_collection(LineCollection(segments, colors=colour, linewidths=width, label=name))
        left = right
    axes.set_xlim(0, max(float(left.max()), 1e-3))
    axes.set_ylim(len(timings) - 0.5, -0.5)  # first shard on top
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("seconds since the first shard started")
    axes.set_ylabel("shard (by start)")
    axes.legend(fontsize=8, frameon=False, ncols=len(names), loc="upper left", bbox_to_anchor=(0, 1.16))
    axes.spines[["top", "right"]].set_visible(False)
    canvas = FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([value for value in values if value is not None], dtype=np.float64)
    return array[np.isfinite(array)]


def _svg_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "diffpir-report"}):
        FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _numeric_first(value: Any) -> tuple[int, float, str]:
    """A sort key that orders numbers by value (1, 4, 16, not "1.0", "16.0", "4.0"), then anything else as text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def sweep_uri(points: Sequence[Mapping[str, float]], parameter: str, *, metric: str = "psnr", title: str = "") -> str:
    """``metric`` against swept ``parameter``: one line per combination of the other swept settings, as an SVG URI.

    ``points``: one mapping per variant with the swept settings and ``metric`` (variants without a value are
    left out)."""
    others = sorted({key for point in points for key in point} - {parameter, metric})
    lines: dict[tuple, list[tuple[float, float]]] = {}
    for point in points:
        if point.get(metric) is None or point.get(parameter) is None:
            continue
        lines.setdefault(tuple(point.get(key) for key in others), []).append(
            (float(point[parameter]), float(point[metric]))
        )
    figure = Figure(figsize=(5.2, 3.0), dpi=100)
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    axes = figure.add_subplot()
    for key, values in sorted(lines.items(), key=lambda item: tuple(_numeric_first(v) for v in item[0])):
        xs, ys = zip(*sorted(values), strict=True)
        label = ", ".join(f"{setting_label(name)}={value}" for name, value in zip(others, key, strict=True)) or metric
        axes.plot(xs, ys, marker="o", linewidth=1.5, label=label)
    axes.set_xlabel(setting_label(parameter))
    axes.set_ylabel(f"mean {metric.upper()}")
    axes.set_title(title or f"{metric.upper()} against {parameter}", fontsize=10)
    if lines:
        axes.legend(fontsize=7, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg_uri(figure)
