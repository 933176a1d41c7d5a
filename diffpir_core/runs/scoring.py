"""Per-image report rows of one shard: the job's metrics of the restoration and of the task's classical
baseline on the same measurement, and the gain of the restoration over the baseline (no Prefect).

Columns: the metric names (``psnr``, ``ssim``, …, ``measurement_rms``), ``noise_sigma`` (the σ each image
was restored with, when images have their own: a manifest's or ``noise_sigma: auto``'s estimate), the same
metrics with a ``baseline_`` prefix, and ``gain_<metric>`` for the full-reference metrics, signed so that a positive
gain means the
restoration is better (``gain_lpips`` = baseline LPIPS − LPIPS). The baseline is quantised to uint8
first, as the restoration is when it is stored, so both are scored the same way. Images the kind's
:meth:`~diffpir_core.task_kinds.TaskKind.baseline_fraction` leaves out have no baseline values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.metrics import (
    BLIND_METRICS,
    blind_scores,
    float_to_uint8,
    score_batch,
    uint8_to_float,
)
from diffpir_core.metrics.batch import CONSISTENCY_COLUMN
from diffpir_core.metrics.consistency import discrepancy, residual_power, sure
from diffpir_core.runs.batches import ShardInputs
from diffpir_core.runs.done import read_checked
from diffpir_core.runs.job import Job
from diffpir_core.runs.measurements import measurement_inputs
from diffpir_core.runs.plan import JobPlan
from diffpir_core.task_kinds import TaskKind

MEASUREMENT_METRICS = ("consistency", "discrepancy", "sure")
"""Metrics of the restoration against its measurement (no ground truth): ``consistency`` (column
``measurement_rms``), ``discrepancy`` and ``sure`` (with ``prediction_error`` beside it in evaluate mode)."""
HIGHER_IS_BETTER = {"psnr": 1.0, "psnr_y": 1.0, "ssim": 1.0, "ssim_y": 1.0, "lpips": -1.0, "niqe": -1.0, "piqe": -1.0}
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
    divergence: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One dict per image of ``inputs``: metrics of ``restored_u8`` (n, H, W, 3), the baseline's, the gains.

    ``metrics`` are job metric names; ``fid`` is dataset-level and skipped, ``consistency`` becomes
    ``measurement_rms``. Full-reference metrics need ``truth_u8`` (evaluate mode). ``sure`` needs each image's
    divergence from SURE's probe (``runs.probes``, by id); an image without one has no ``sure`` value.
    """
    pixel = [name for name in metrics if name not in ("fid", *MEASUREMENT_METRICS, *BLIND_METRICS)]
    blind = [name for name in metrics if name in BLIND_METRICS]
    measured = [name for name in metrics if name in MEASUREMENT_METRICS]
    rows = _score(task, inputs, uint8_to_float(restored_u8), truth_u8, pixel, measured, device, blind, divergence)
    if blind:  # the degraded input at its own size (an enlarged copy would score the enlargement)
        _add_blind(rows, float_to_uint8(inputs.y), blind, prefix="degraded_")
    if inputs.noise_sigma is not None:  # the σ each image was restored with (a manifest's or the estimate)
        for row, sigma in zip(rows, inputs.noise_sigma, strict=True):
            row["noise_sigma"] = sigma
    height, width = restored_u8.shape[1:3]
    fraction = task.baseline_fraction(height, width, inputs.params)
    chosen = [i for i, image_id in enumerate(inputs.ids) if baseline_selected(image_id, fraction)]
    baseline_measured = [name for name in measured if name != "sure"]  # the baseline has no probe
    if not chosen or not (pixel or baseline_measured or blind):
        return rows
    subset = inputs.select(chosen)
    restored_baseline = task.baseline(subset.y, subset.params, subset.noise_sigma)
    baseline = uint8_to_float(float_to_uint8(restored_baseline))  # stored like the restoration
    truth = None if truth_u8 is None else truth_u8[chosen]
    for i, values in zip(
        chosen, _score(task, subset, baseline, truth, pixel, baseline_measured, device, blind), strict=True
    ):
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
    measured: Sequence[str],
    device: str,
    blind: Sequence[str] = (),
    divergence: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Rows of metric values of float images (n, 3, H, W) against ``truth_u8`` and the measurement (``measured``:
    the :data:`MEASUREMENT_METRICS` asked for), and the blind scores ``blind`` of the images alone."""
    rows: list[dict[str, Any]] = [{} for _ in inputs.ids]
    if blind:
        _add_blind(rows, float_to_uint8(images), blind)
    if pixel:
        scores = score_batch(images, truth_u8, pixel, border=task.metric_border, device=device)
        for row, values in zip(rows, scores.rows(), strict=True):
            row.update(values)
    if measured:
        for name, values in _measurement_scores(task, inputs, images, truth_u8, measured, divergence).items():
            for row, value in zip(rows, values, strict=True):
                row[name] = None if math.isnan(value) else float(value)
    return rows


def _measurement_scores(
    task: TaskKind,
    inputs: ShardInputs,
    images: torch.Tensor,
    truth_u8: np.ndarray | None,
    measured: Sequence[str],
    divergence: Mapping[str, float] | None,
) -> dict[str, np.ndarray]:
    """Column -> per-image values of the ``measured`` metrics (NaN where an image has none: σ = 0 for the
    discrepancy, no probe divergence for SURE); with ground truth, SURE comes with the error it estimates,
    ``prediction_error`` = ‖A(x̂ − x)‖² / m."""
    operator = task.operator(inputs.params)
    power = residual_power(operator, images, inputs.y.to(torch.float32))
    sigmas = task.sigmas(len(inputs.ids), inputs.noise_sigma)
    columns: dict[str, np.ndarray] = {}
    if "consistency" in measured:
        columns[CONSISTENCY_COLUMN] = np.sqrt(power)
    if "discrepancy" in measured:
        columns["discrepancy"] = discrepancy(power, sigmas)
    if "sure" in measured:
        found = divergence or {}
        columns["sure"] = sure(power, sigmas, np.array([found.get(i, math.nan) for i in inputs.ids]))
        if truth_u8 is not None:
            columns["prediction_error"] = residual_power(operator, images, operator.A(uint8_to_float(truth_u8)))
    return columns


def _add_blind(rows: list[dict[str, Any]], images_u8: np.ndarray, metrics: Sequence[str], prefix: str = "") -> None:
    """Blind scores of ``images_u8`` into ``rows`` as ``<prefix><metric>``; an image a metric cannot score (too
    small, flat) gets None."""
    scores = blind_scores(images_u8, metrics)
    for name, values in scores.values.items():
        for row, value in zip(rows, values, strict=True):
            row[f"{prefix}{name}"] = None if math.isnan(value) else float(value)


def degraded_psnr(task: TaskKind, inputs: ShardInputs, truth_u8: np.ndarray) -> list[float]:
    """PSNR of each degraded input as a viewer sees it: the measurement quantised to uint8 and enlarged to the
    ground truth's size by pixel repetition (SR), holes as stored (inpainting); the floor a method must beat."""
    degraded = uint8_to_float(float_to_uint8(inputs.y))
    scale = task.output_scale
    if scale > 1:
        degraded = degraded.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    scores = score_batch(degraded, truth_u8, ["psnr"], border=task.metric_border)
    return [float(row["psnr"]) for row in scores.rows()]


def shard_metrics_key(job: Job, plan: JobPlan, shard: ShardRef, checksum: str) -> str:
    """What a shard's metric rows depend on: job, shard, prior, code, the restored data's checksum, metrics,
    baseline."""
    metrics = "-".join(job.effective_metrics())
    digest = checksum.removeprefix("sha256:")[:24]
    return (
        f"metrics/{plan.job_hash[:16]}/{shard.key}/{plan.model_sha256[:16]}/{plan.code_version}/{digest}/{metrics}"
        f"/{job.task.BASELINE}"
    )


def scoring_key(job: Job) -> str:
    """What a shard's metric rows were computed with (metrics and baseline): rows kept in a record count only for a
    job asking for the same (the metrics are not part of the job hash, so a re-run may ask for others)."""
    return f"{'-'.join(job.effective_metrics())}/{job.task.BASELINE}"


def rows_of(
    job: Job,
    plan: JobPlan,
    source: DatasetStore,
    shard: ShardRef,
    inputs: ShardInputs,
    restored: np.ndarray,
    sample_seconds: float | None,
    divergence: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per restored image of ``shard``: id, shard, the job's metrics with the baseline's and the gain, sampling
    seconds per image (quarantined images were not restored: no rows for them); ``divergence``: SURE's probe's, by
    image id (``runs.probes``)."""
    kept = inputs.kept()
    if not kept:
        return []
    truth = source.read_images(shard) if job.mode == "evaluate" else None
    if len(kept) < shard.size:
        inputs, restored = inputs.select(kept), restored[kept]
        truth = None if truth is None else truth[kept]
    scores = score_images(
        job.task, inputs, restored, truth, job.effective_metrics(), device=plan.device, divergence=divergence
    )
    seconds = None if sample_seconds is None else sample_seconds / len(kept)
    return [
        {"id": image_id, "shard": shard.key, "task": job.task_label(), **values, "seconds": seconds}
        for image_id, values in zip(inputs.ids, scores, strict=True)
    ]


def score_shard(job: Job, plan: JobPlan, shard: ShardRef) -> list[dict[str, Any]]:
    """:func:`rows_of` a shard as the store holds it (its restored pixels verified against its record, and its
    measurements)."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    restored, record = read_checked(out, shard, plan.restored_array)
    inputs = measurement_inputs(job, plan, source, out, shard)
    sample = record.timings.get("sample", 0.0)
    return rows_of(job, plan, source, shard, inputs, restored, sample, record.metrics.get("divergence"))
