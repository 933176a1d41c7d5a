"""Pictures and tables of per-pixel uncertainty: heatmaps on one shared scale with a colour bar, the
degraded | estimate | std | |error| row, the coverage table and the error-against-std plot (docs/uncertainty.md).

Every heatmap of a report uses the same colour map (viridis: perceptually uniform, readable in grey and by
colour-blind readers) and the same ``vmax``, so one colour means one value in every image; values above ``vmax``
saturate. A map is labelled calibrated only when it shows the conformal band half-width q̂·std; raw sample spread
carries :data:`UNCALIBRATED` wherever it is shown.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from diffpir_core.reporting.plots import BASELINE_COLOUR, RESTORED_COLOUR
from diffpir_core.reporting.text import format_number

COLOUR_MAP = "viridis"
UNCALIBRATED = "uncalibrated (raw sample spread, not a confidence)"
GAP = 4
"""White pixels between the panels of a row."""


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    """The colour map as 256 uint8 RGB entries."""
    return (colormaps[COLOUR_MAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """uint8 (H, W, 3) colours of ``values`` (H, W), or (H, W, 3) averaged over channels, on the scale [0, vmax]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3 and array.shape[2] == 3:
        array = array.mean(axis=2)
    if array.ndim != 2:
        raise ValueError(f"heatmap values must be (H, W) or (H, W, 3), got shape {array.shape}")
    if not (math.isfinite(vmax) and vmax > 0):
        raise ValueError(f"vmax must be a finite number > 0, got {vmax!r}")
    index = np.clip(np.nan_to_num(array / vmax, nan=0.0), 0.0, 1.0) * 255
    return _lut()[index.round().astype(np.intp)]


def shared_vmax(arrays: Sequence[np.ndarray], quantile: float = 0.99) -> float:
    """One scale for a set of maps: the ``quantile`` of their pooled values (a few extreme pixels saturate instead
    of darkening every other map), at least 1/255."""
    pooled = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(1)
    finite = pooled[np.isfinite(pooled)]
    return max(float(np.quantile(finite, quantile)) if finite.size else 0.0, 1 / 255)


def _text_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=ImageFont.load_default())
    return int(right - left)


def colour_bar_rgb(vmax: float, height: int, label: str) -> np.ndarray:
    """A vertical colour bar ``height`` px tall (0 at the bottom, ``vmax`` at the top) with ticks at 0, vmax/2 and
    vmax (values on the [0, 1] pixel scale) and ``label`` above the bar, as uint8 (height, width, 3)."""
    if height < 32:
        raise ValueError(f"a colour bar needs at least 32 px of height, got {height}")
    ticks = [format_number(vmax * share, 3) for share in (1.0, 0.5, 0.0)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    bar_width, top, bottom = 12, 14, height - 6
    width = bar_width + 6 + max(_text_width(probe, text) for text in [*ticks, ""]) + 2
    width = max(width, _text_width(probe, label) + 2)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    ramp = np.linspace(vmax, 0.0, bottom - top)[:, None].repeat(bar_width, axis=1)
    canvas.paste(Image.fromarray(heatmap_rgb(ramp, vmax)), (0, top))
    draw.text((0, 0), label, fill="black", font=ImageFont.load_default())
    for text, y in zip(ticks, (top, (top + bottom) // 2, bottom - 1), strict=True):
        draw.line([(bar_width, y), (bar_width + 3, y)], fill="black")
        draw.text(
            (bar_width + 6, max(top, min(y - 5, bottom - 11))), text, fill="black", font=ImageFont.load_default()
        )
    return np.asarray(canvas)


def _to_size(image_u8: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image_u8`` enlarged by whole pixels (nearest neighbour) to (height, width): the SR measurement beside the
    estimate, as the report's panels show it."""
    h, w = image_u8.shape[:2]
    if (h, w) == (height, width):
        return image_u8
    if height % h or width % w or height // h != width // w:
        raise ValueError(f"the degraded image is {h}x{w}, not a whole fraction of the estimate's {height}x{width}")
    factor = height // h
    return np.repeat(np.repeat(image_u8, factor, axis=0), factor, axis=1)


def uncertainty_row(
    degraded_u8: np.ndarray,
    estimate_u8: np.ndarray,
    std: np.ndarray,
    abs_error: np.ndarray | None,
    vmax: float,
    *,
    label: str = "std",
) -> np.ndarray:
    """degraded | estimate | std heatmap | |error| heatmap (evaluate mode; left out when None) | colour bar, as one
    uint8 image; std and |error| share ``vmax`` and the bar (``label`` names what the maps show)."""
    height, width = estimate_u8.shape[:2]
    for name, array in (("std", std), ("abs_error", abs_error)):
        if array is not None and np.shape(array)[:2] != (height, width):
            raise ValueError(f"{name} is {np.shape(array)[:2]}, the estimate {height}x{width}: pass the same image")
    panels = [_to_size(degraded_u8, height, width), estimate_u8, heatmap_rgb(std, vmax)]
    panels += [] if abs_error is None else [heatmap_rgb(abs_error, vmax)]
    panels.append(colour_bar_rgb(vmax, max(height, 32), label))
    row_height = max(panel.shape[0] for panel in panels)
    gap = np.full((row_height, GAP, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for panel in panels:
        padded = np.full((row_height, panel.shape[1], 3), 255, dtype=np.uint8)
        padded[: panel.shape[0]] = panel
        parts += [padded, gap]
    return np.concatenate(parts[:-1], axis=1)


def uncertainty_caption(scale: float | None, alpha: float | None = None, delta: float | None = None) -> str:
    """What an uncertainty map shows: the calibrated band half-width q̂·std with its guarantee, or, without a
    calibration (``scale`` None), :data:`UNCALIBRATED`."""
    if scale is None:
        return f"std of the samples: {UNCALIBRATED}"
    if alpha is None or delta is None:
        raise ValueError("a calibrated caption states its guarantee: pass alpha and delta with the scale")
    return (
        f"calibrated band half-width q̂·std (q̂ = {scale:.3g}): on a new image like the calibration images, at least "
        f"{1 - alpha:.0%} of the pixels lie within estimate ± q̂·std with probability ≥ {1 - delta:.0%}"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def coverage_table_markdown(summary: Mapping[str, Any]) -> str:
    """A markdown table of target against measured for a :func:`~diffpir_core.uncertainty.coverage_summary`."""
    target = summary["target"]
    upper = target.get("image_coverage_upper")
    image_target = f"≥ {_percent(target['image_coverage'])}" + (f" (≤ {_percent(upper)})" if upper else "")
    correlation = summary["std_error_correlation"]
    pearson, spearman = correlation.get("pearson"), correlation.get("spearman")
    width = summary["mean_width"]
    lines = [
        "| quantity | target | measured |",
        "| --- | --- | --- |",
        f"| images with ≥ {_percent(target['pixel_coverage'])} of pixels in the band | {image_target} "
        f"| {_percent(summary['image_coverage'])} of {summary['n_images']} test images |",
        f"| mean pixel coverage | ≥ {_percent(target['pixel_coverage'])} per covered image "
        f"| {_percent(summary['mean_pixel_coverage'])} |",
        f"| mean band width 2·q̂·std | as small as the coverage allows | {width:.4f} ({255 * width:.1f} of 255) |",
        f"| correlation of std with \\|error\\| | > 0 (std ranks the errors) | Pearson {format_number(pearson, 3)}, "
        f"Spearman {format_number(spearman, 3)} |",
    ]
    return "\n".join(lines) + "\n"


def error_vs_std_png(
    stds: Sequence[np.ndarray], abs_errors: Sequence[np.ndarray], scale: float, bins: int = 20
) -> bytes:
    """PNG of the mean |error| of pixels binned by their std (equal-count bins over the pooled pixels), with the
    band half-width q̂·std as a line: points under the line are pixels the band covers on average."""
    std = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in stds])
    err = np.concatenate([np.asarray(e, dtype=np.float64).ravel() for e in abs_errors])
    if std.size == 0 or std.shape != err.shape:
        raise ValueError(f"{std.size} std values and {err.size} errors: pass the same, non-empty images")
    edges = np.unique(np.quantile(std, np.linspace(0.0, 1.0, bins + 1)))
    which = np.clip(np.searchsorted(edges, std, side="right") - 1, 0, max(len(edges) - 2, 0))
    counts = np.bincount(which, minlength=max(len(edges) - 1, 1))
    used = counts > 0
    centres = np.bincount(which, weights=std)[used] / counts[used]
    means = np.bincount(which, weights=err)[used] / counts[used]
    figure = Figure(figsize=(4.8, 3.4), dpi=100)
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.14, top=0.9)
    axes = figure.add_subplot()
    axes.plot(centres, means, "o-", color=RESTORED_COLOUR, markersize=4, label="mean |error| per std bin")
    line = np.array([0.0, 1.05 * float(centres.max())])  # over the binned range, not out to one extreme pixel
    axes.plot(line, scale * line, "--", color=BASELINE_COLOUR, label=f"band half-width q̂·std (q̂ = {scale:.3g})")
    axes.set_xlabel("per-pixel std of the samples ([0, 1] scale)")
    axes.set_ylabel("|estimate − truth|")
    axes.set_title("error against sample spread", fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
