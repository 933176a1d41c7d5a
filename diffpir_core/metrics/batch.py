"""Score one batch of restorations: the per-image numbers of a report row.

Metric names are the job file's: ``psnr``, ``psnr_y``, ``ssim``, ``ssim_y``, ``lpips`` (need ground
truth), ``consistency`` (needs the operator and measurement: restore mode; reported in the column
``measurement_rms``) and ``fid`` (dataset-level, accepted and skipped here: accumulate
:class:`~diffpir_core.metrics.fid.FIDStats` instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from diffpir_core.metrics.consistency import ForwardOperator, measurement_rms
from diffpir_core.metrics.convert import float_to_uint8, uint8_to_float
from diffpir_core.metrics.fidelity import SSIM_RADIUS, psnr, ssim
from diffpir_core.metrics.perceptual import load_lpips
from diffpir_core.metrics.unavailable import MetricUnavailable

_PIXEL_METRICS = {
    "psnr": (psnr, False),
    "psnr_y": (psnr, True),
    "ssim": (ssim, False),
    "ssim_y": (ssim, True),
}
FULL_REFERENCE_METRICS = (*_PIXEL_METRICS, "lpips")
KNOWN_METRICS = (*FULL_REFERENCE_METRICS, "consistency", "fid")
CONSISTENCY_COLUMN = "measurement_rms"
SSIM_WINDOW = 2 * SSIM_RADIUS + 1


@dataclass
class BatchScores:
    """Per-image values (metric -> float64 (B,)) and the metrics that could not be computed."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, MetricUnavailable] = field(default_factory=dict)

    def rows(self) -> list[dict[str, float | None]]:
        """One dict per image; an unavailable metric is None."""
        size = max((len(v) for v in self.values.values()), default=0)
        names = [*self.values, *self.unavailable]
        return [
            {name: float(self.values[name][i]) if name in self.values else None for name in names} for i in range(size)
        ]


def _too_small_for_ssim(name: str, size: Sequence[int], border: int) -> MetricUnavailable | None:
    """Why SSIM has no value for images of ``size`` (its 11x11 window must fit after the border crop), or None."""
    height, width = (side - 2 * border for side in size)
    if min(height, width) >= SSIM_WINDOW:
        return None
    return MetricUnavailable(
        name,
        f"its {SSIM_WINDOW}x{SSIM_WINDOW} window needs images of at least that size after the border crop of {border} "
        f"pixel(s); these are {max(height, 0)}x{max(width, 0)}",
        "judge such small images by psnr (their ssim is left empty)",
    )


def score_batch(
    restored: torch.Tensor,
    reference_u8: np.ndarray | None,
    metrics: Sequence[str] = ("psnr", "ssim"),
    *,
    border: int = 0,
    device: str | torch.device = "cpu",
    operator: ForwardOperator | None = None,
    measurement: torch.Tensor | None = None,
) -> BatchScores:
    """Score restored float images (B, 3, H, W), as the sampler returns them (unclamped).

    ``reference_u8``: uint8 (B, H, W, 3) ground truth, None in restore mode. PSNR/SSIM (and the
    ``_y`` luma variants) score the quantised output, LPIPS the clamped float output, like the
    reference; ``consistency`` is :func:`measurement_rms` of ``operator`` and ``measurement``, under
    the name ``measurement_rms``.
    LPIPS, and SSIM on images smaller than its window, report :class:`MetricUnavailable` (their values None) instead
    of failing; wrong requests raise ValueError.
    """
    unknown = [name for name in metrics if name not in KNOWN_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(KNOWN_METRICS)}")
    needs_truth = [name for name in metrics if name in FULL_REFERENCE_METRICS]
    if needs_truth and reference_u8 is None:
        raise ValueError(f"metrics {needs_truth} need ground truth; pass reference_u8 or drop them")
    if "consistency" in metrics and (operator is None or measurement is None):
        raise ValueError("metric consistency needs the operator and the measurement y")
    scores = BatchScores()
    restored_u8 = float_to_uint8(restored) if needs_truth else None
    for name in metrics:
        if name in _PIXEL_METRICS:
            function, y_channel = _PIXEL_METRICS[name]
            if function is ssim and (small := _too_small_for_ssim(name, restored.shape[-2:], border)) is not None:
                scores.unavailable[name] = small
                continue
            value = function(restored_u8, reference_u8, border=border, y_channel=y_channel)
            scores.values[name] = np.atleast_1d(value)
        elif name == "lpips":
            scorer = load_lpips(device)
            if isinstance(scorer, MetricUnavailable):
                scores.unavailable[name] = scorer
            else:
                scores.values[name] = scorer(restored, uint8_to_float(reference_u8))
        elif name == "consistency":
            scores.values[CONSISTENCY_COLUMN] = measurement_rms(operator, restored, measurement)
    return scores
