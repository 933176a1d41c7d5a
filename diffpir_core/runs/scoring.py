"""Per-image report rows of one shard: the job's metrics of the restoration and of the task's classical
baseline on the same measurement, and the gain of the restoration over the baseline (no Prefect).

Columns: the metric names (``psnr``, ``ssim``, …, ``measurement_rms``), ``noise_sigma`` (the σ each image
was restored with, when images have their own: a manifest's or ``noise_sigma: auto``'s estimate), the same
metrics with a ``baseline_`` prefix, and ``gain_<metric>`` for the full-reference metrics, signed so that a positive gain means the
restoration is better (``gain_lpips`` = baseline LPIPS − LPIPS). The baseline is quantised to uint8
first, as the restoration is when it is stored, so both are scored the same way. Images the kind's
:meth:`~diffpir_core.task_kinds.TaskKind.baseline_fraction` leaves out have no baseline values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffpir_core.metrics import float_to_uint8, measurement_rms, score_batch, uint8_to_float
from diffpir_core.metrics.batch import CONSISTENCY_COLUMN
from diffpir_core.restore import ShardInputs
from diffpir_core.task_kinds import TaskKind

HIGHER_IS_BETTER = {"psnr": 1.0, "psnr_y": 1.0, "ssim": 1.0, "ssim_y": 1.0, "lpips": -1.0}
"""Metrics that get a ``gain_`` column, with the sign that makes a positive gain an improvement."""


def baseline_selected(image_id: str, fraction: float) -> bool:
    """Whether image ``image_id`` gets the baseline at ``fraction``: a hash of the id below the fraction,
    so the choice is the same in every run, shard layout and process."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"baseline:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def gain(metric: str, restored: float | None, baseline: float | None) -> float | None:
    """Signed improvement of ``restored`` over ``baseline`` for ``metric``; None when either is missing
    or the difference is undefined (an infinite PSNR on both sides)."""
    if restored is None or baseline is None:
        return None
    value = HIGHER_IS_BETTER[metric] * (restored - baseline)
    return None if math.isnan(value) else value


def score_images(
    task: TaskKind,
    inputs: ShardInputs,
    restored_u8: np.ndarray,
    truth_u8: np.ndarray | None,
    metrics: Sequence[str],
    *,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """One dict per image of ``inputs``: metrics of ``restored_u8`` (n, H, W, 3), the baseline's, the gains.

    ``metrics`` are job metric names; ``fid`` is dataset-level and skipped, ``consistency`` becomes
    ``measurement_rms``. Full-reference metrics need ``truth_u8`` (evaluate mode).
    """
    pixel = [name for name in metrics if name not in ("consistency", "fid")]
    consistency = "consistency" in metrics
    rows = _score(task, inputs, uint8_to_float(restored_u8), truth_u8, pixel, consistency, device)
    if inputs.noise_sigma is not None:  # the σ each image was restored with (a manifest's or the estimate)
        for row, sigma in zip(rows, inputs.noise_sigma, strict=True):
            row["noise_sigma"] = sigma
    height, width = restored_u8.shape[1:3]
    fraction = task.baseline_fraction(height, width, inputs.params)
    chosen = [i for i, image_id in enumerate(inputs.ids) if baseline_selected(image_id, fraction)]
    if not chosen or not (pixel or consistency):
        return rows
    subset = inputs.select(chosen)
    restored_baseline = task.baseline(subset.y, subset.params, subset.noise_sigma)
    baseline = uint8_to_float(float_to_uint8(restored_baseline))  # stored like the restoration
    truth = None if truth_u8 is None else truth_u8[chosen]
    for i, values in zip(chosen, _score(task, subset, baseline, truth, pixel, consistency, device), strict=True):
        row = rows[i]
        for name, value in values.items():
            row[f"baseline_{name}"] = value
            if name in HIGHER_IS_BETTER:
                row[f"gain_{name}"] = gain(name, row.get(name), value)
    return rows


def _score(
    task: TaskKind,
    inputs: ShardInputs,
    images: torch.Tensor,
    truth_u8: np.ndarray | None,
    pixel: Sequence[str],
    consistency: bool,
    device: str,
) -> list[dict[str, Any]]:
    """Rows of metric values of float images (n, 3, H, W) against ``truth_u8`` and the measurement."""
    rows: list[dict[str, Any]] = [{} for _ in inputs.ids]
    if pixel:
        scores = score_batch(images, truth_u8, pixel, border=task.metric_border, device=device)
        for row, values in zip(rows, scores.rows(), strict=True):
            row.update(values)
    if consistency:
        operator = task.operator(inputs.params)
        rms = measurement_rms(operator, images, inputs.y.to(torch.float32))
        for row, value in zip(rows, rms, strict=True):
            row[CONSISTENCY_COLUMN] = float(value)
    return rows


def degraded_psnr(task: TaskKind, inputs: ShardInputs, truth_u8: np.ndarray) -> list[float]:
    """PSNR of each degraded input as a viewer sees it: the measurement quantised to uint8 and enlarged to the
    ground truth's size by pixel repetition (SR), holes as stored (inpainting); the floor a method must beat."""
    degraded = uint8_to_float(float_to_uint8(inputs.y))
    scale = task.output_scale
    if scale > 1:
        degraded = degraded.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    scores = score_batch(degraded, truth_u8, ["psnr"], border=task.metric_border)
    return [float(row["psnr"]) for row in scores.rows()]
