"""What a tuning job optimises: one number per trial, aggregated from a per-image metric of the job's rows.

A tuning trial is an ordinary job whose rows carry the objective's metric (``psnr``, ``ssim``, ``lpips`` with ground
truth; ``discrepancy`` and ``sure`` without, see docs/metrics.md). :func:`objective_problem` says, before any work,
why an objective cannot apply to a job (no ground truth, no noise to calibrate against, an unknown name).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diffpir_core.metrics.perceptual import missing_lpips_weights
from diffpir_core.metrics.unavailable import MetricUnavailable, import_optional
from diffpir_core.task_kinds.base import AUTO_SIGMA

if TYPE_CHECKING:
    from diffpir_core.runs.job import Job
    from diffpir_core.task_kinds import TaskKind


@dataclass(frozen=True)
class Objective:
    """A tuning objective: the per-image row key it reads (``metric``), which way is better, whether it needs ground
    truth, and ``target``: the value the mean over images should be closest to (None: the mean itself is the
    objective)."""

    name: str
    metric: str
    direction: Literal["maximize", "minimize"]
    needs_truth: bool
    target: float | None = None

    def value(self, per_image: Sequence[float | None]) -> float:
        """The trial's objective from its per-image values: their mean, or ``|mean − target|`` with a target.

        A missing (None) or NaN image value makes the result NaN (an image that could not be scored gives the trial no
        value; Optuna records such a trial as failed); no values at all is an error.
        """
        if not per_image:
            raise ValueError(
                f"objective {self.name}: no per-image {self.metric} values to aggregate (no images scored)"
            )
        mean = sum(math.nan if v is None else float(v) for v in per_image) / len(per_image)
        return mean if self.target is None else abs(mean - self.target)


OBJECTIVES: dict[str, Objective] = {
    "psnr": Objective("psnr", "psnr", "maximize", needs_truth=True),
    "ssim": Objective("ssim", "ssim", "maximize", needs_truth=True),
    "lpips": Objective("lpips", "lpips", "minimize", needs_truth=True),
    "discrepancy": Objective("discrepancy", "discrepancy", "minimize", needs_truth=False, target=1.0),
    "sure": Objective("sure", "sure", "minimize", needs_truth=False),
}
"""The objectives by name; ``psnr`` is the default of evaluate mode. ``discrepancy``: the mean over images of
‖A x̂ − y‖² / (m σ²) should be 1 (Morozov's discrepancy principle), so the objective is its distance from 1 (the mean
rather than per-image distances: one setting serves every image, and images that over- and under-fit at it balance
out as they would in one large image). ``sure``: the mean SURE estimate of the per-entry prediction risk
‖A(x̂ − x)‖² / m."""

NOISE_METRICS = frozenset({"discrepancy", "sure"})
"""Metrics (and objectives) calibrated against the measurement's noise: they need σ > 0."""


def objective_problem(name: str, job: Job) -> str | None:
    """Why objective ``name`` cannot apply to ``job`` (one line naming the field and what to use instead), or None.

    Checked before any work: ground-truth objectives need mode evaluate; ``lpips`` needs its package and VGG16
    weights; ``discrepancy`` and ``sure`` need a noise level above 0 in every task of the job (with σ = 0 there is no
    noise to calibrate against); ``sure`` needs fp32, because bf16/fp16 round the restoration by more than its probe
    moves it. Every method's output is a deterministic function of y given its per-image seeds, which SURE's common
    random numbers rely on, so no method is refused.
    """
    objective = OBJECTIVES.get(name)
    if objective is None:
        return f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}"
    if objective.needs_truth and job.mode == "restore":
        return (
            f"objective {name} needs ground truth, which mode restore does not have; use discrepancy or sure, or tune "
            f"on {name} with mode evaluate on labelled images like yours"
        )
    if name == "lpips" and (unavailable := _lpips_unavailable()):
        return f"objective lpips: {unavailable.message}"
    if name in NOISE_METRICS:
        return noise_problem(f"objective {name}", name, job)
    return None


def noise_problem(label: str, name: str, job: Job) -> str | None:
    """Why metric ``name`` of :data:`NOISE_METRICS` cannot be computed for ``job`` (``label`` starts the message), or
    None: a task of the job with σ = 0 (no noise to calibrate against); for ``sure`` also a precision below fp32."""
    for field, task in _tasks(job):
        if task.noise_sigma != AUTO_SIGMA and float(task.noise_sigma) == 0.0:
            return (
                f"{label}: {field}.noise_sigma is 0 ({task.label()}), so there is no noise to calibrate against; set "
                f"{field}.noise_sigma to the measurements' noise level (or auto to estimate it per image), or tune on "
                "psnr with a mode evaluate job on held-out images like yours"
            )
    if name == "sure" and job.precision != "fp32":
        return (
            f"{label}: precision {job.precision} rounds the restoration by more than SURE's probe moves it, so its "
            "divergence would measure rounding; use precision fp32"
        )
    return None


def _tasks(job: Job) -> list[tuple[str, TaskKind]]:
    """(field name, task) of every task ``job`` runs: ``task``, or each of ``tasks`` of a comparison."""
    if job.tasks:
        return [(f"tasks[{i}]", task) for i, task in enumerate(job.tasks)]
    return [("task", job.task)]


def _lpips_unavailable() -> MetricUnavailable | None:
    """Why LPIPS cannot be computed here (its package, or its VGG16 weights in the torch hub cache), or None."""
    module = import_optional("LPIPS", "lpips")
    return module if isinstance(module, MetricUnavailable) else missing_lpips_weights()
