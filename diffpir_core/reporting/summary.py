"""Aggregate per-image metric rows and run facts into the JSON-ready summary that every report renders."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from diffpir_core.metrics.unavailable import MetricUnavailable

Row = Mapping[str, Any]
ROW_KEYS = ("id", "shard", "task")  # identity columns: not metrics
NON_METRIC_KEYS = (*ROW_KEYS, "seconds", "error")
BASE_METRICS = ("psnr", "psnr_y", "ssim", "ssim_y", "lpips", "measurement_rms", "piqe", "niqe")
METRIC_ORDER = (
    *BASE_METRICS,
    *(f"baseline_{name}" for name in BASE_METRICS),
    *(f"degraded_{name}" for name in ("piqe", "niqe")),
    *(f"gain_{name}" for name in BASE_METRICS if name != "measurement_rms"),
)
GAIN_METRIC = "gain_psnr"
"""The per-image gain that ranks images best to worst (PSNR gain over the baseline, in dB)."""


@dataclass
class ReportFacts:
    """Facts about a run that the rows do not carry.

    ``task`` is a display label ("sr x4, sigma 0.05"); ``baseline`` the name of the task's classical
    method whose ``baseline_*`` / ``gain_*`` columns the rows carry; ``fid`` the dataset FID (or why it is missing);
    ``unavailable`` the per-image metrics that could not be computed; ``failed`` one mapping per shard with a
    ``shard`` and an ``error``, ``quarantined`` one per image with an ``id`` and a ``reason``.
    """

    task: str
    dataset: str
    prior: str
    nfes: int
    wall_seconds: float
    mode: str = "evaluate"
    baseline: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    fid: float | MetricUnavailable | None = None
    unavailable: Sequence[MetricUnavailable] = ()
    failed: Sequence[Mapping[str, Any]] = ()
    quarantined: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class ReportSection:
    """A section a kind of job adds to its report: ``data`` goes into the summary under ``key``, ``markdown`` into
    report.md and ``html`` (fragments) into report.html and its card, after the samples."""

    key: str
    data: Mapping[str, Any]
    markdown: str
    html: Sequence[str] = ()


def metric_names(rows: Sequence[Row]) -> list[str]:
    """Numeric metric columns present in ``rows``: known metrics first, others in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in seen and key not in NON_METRIC_KEYS and (value is None or _is_number(value)):
                seen[key] = None
    known = [name for name in METRIC_ORDER if name in seen]
    return known + [name for name in seen if name not in METRIC_ORDER]


def build_summary(rows: Sequence[Row], info: ReportFacts) -> dict[str, Any]:
    """The run's summary: identity, throughput, per-metric statistics, FID, what failed or is missing.

    A metric column without any value is listed as unavailable even when ``info`` gives no reason.
    Values are plain JSON types; a statistic over no values is None, an infinite PSNR stays ``inf``
    (:func:`~diffpir_core.reporting.write.write_report` serialises it as the string "inf").
    """
    images = len(rows)
    metrics = {name: _statistics([row.get(name) for row in rows]) for name in metric_names(rows)}
    unavailable = {item.metric.lower(): item.message for item in info.unavailable}
    for name, stats in metrics.items():
        if stats["count"] == 0 and images and name not in unavailable:
            unavailable[name] = f"{name}: no image has a value (the scoring step recorded none)"
    fid: float | None = None
    if isinstance(info.fid, MetricUnavailable):
        unavailable["fid"] = info.fid.message
    elif info.fid is not None:
        fid = float(info.fid)
    return {
        "task": info.task,
        "mode": info.mode,
        "dataset": info.dataset,
        "prior": info.prior,
        "images": images,
        "nfes": info.nfes,
        "wall_seconds": info.wall_seconds,
        "images_per_second": images / info.wall_seconds if info.wall_seconds > 0 else None,
        "metrics": metrics,
        "baseline": _baseline_summary(rows, metrics, info.baseline),
        "fid": fid,
        "unavailable": unavailable,
        "failed": [dict(item) for item in info.failed],
        "quarantined": [dict(item) for item in info.quarantined],
        "config": dict(info.config),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _baseline_summary(
    rows: Sequence[Row], metrics: Mapping[str, Mapping[str, Any]], method: str | None
) -> dict[str, Any] | None:
    """The baseline's name, how many images it was scored on, the mean gain per metric and on how many
    images the restoration beat it (gain > 0); None when the rows carry no baseline."""
    scored = [name for name in metrics if name.startswith("baseline_") and metrics[name]["count"]]
    if method is None and not scored:
        return None
    gains = [name for name in metrics if name.startswith("gain_")]
    return {
        "method": method,
        "images": max((metrics[name]["count"] for name in scored), default=0),
        "gain": {name.removeprefix("gain_"): metrics[name]["mean"] for name in gains},
        "better": {name.removeprefix("gain_"): sum(1 for row in rows if (row.get(name) or 0) > 0) for name in gains},
    }


def _statistics(values: Sequence[Any]) -> dict[str, float | int | None]:
    """count, mean, population std, min, max of the values that are present (None/NaN skipped)."""
    present = [float(value) for value in values if value is not None]
    present = [value for value in present if not math.isnan(value)]
    if not present:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = math.fsum(present) / len(present)
    std = None
    if math.isfinite(mean):
        std = math.sqrt(math.fsum((value - mean) ** 2 for value in present) / len(present))
    return {"count": len(present), "mean": mean, "std": std, "min": min(present), "max": max(present)}


def _is_number(value: Any) -> bool:
    if type(value) is float or type(value) is int:  # the common case, without the slow ABC check
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
