"""Which images a report shows, chosen from the per-image rows in one pass: samples spread over the job,
and the best and worst images by gain over the baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from diffpir_core.reporting.summary import GAIN_METRIC, Row


@dataclass(frozen=True)
class ImagePicks:
    """Image ids to render: ``samples`` in job order, ``best`` / ``worst`` by ``metric`` (None: no gain)."""

    samples: list[str] = field(default_factory=list)
    best: list[str] = field(default_factory=list)
    worst: list[str] = field(default_factory=list)
    metric: str | None = None

    def ids(self) -> list[str]:
        """Every picked id once, in the order samples, best, worst."""
        return list(dict.fromkeys([*self.samples, *self.best, *self.worst]))


def pick_images(rows: Sequence[Row], samples: int, extremes: int) -> ImagePicks:
    """``samples`` images evenly spaced over the rows (among those with a baseline, when any has one),
    and the ``extremes`` highest and lowest finite PSNR gains (fewer when the job has fewer images)."""
    gains = [(row.get(GAIN_METRIC), str(row["id"])) for row in rows]
    ranked = sorted(
        ((value, image_id) for value, image_id in gains if value is not None and math.isfinite(value)),
        key=lambda pair: pair[0],
    )
    pool = [str(row["id"]) for row in rows if _has_baseline(row)] or [str(row["id"]) for row in rows]
    chosen: list[str] = []
    if samples and pool:
        positions = np.unique(np.linspace(0, len(pool) - 1, min(samples, len(pool))).round().astype(int))
        chosen = [pool[i] for i in positions]
    if not ranked or not extremes:
        return ImagePicks(samples=chosen)
    count = min(extremes, len(ranked) // 2) or 1
    best = [image_id for _, image_id in reversed(ranked[-count:])]
    worst = [image_id for _, image_id in ranked[:count] if image_id not in best]
    return ImagePicks(samples=chosen, best=best, worst=worst, metric=GAIN_METRIC)


def _has_baseline(row: Row) -> bool:
    return any(key.startswith("baseline_") and value is not None for key, value in row.items())
