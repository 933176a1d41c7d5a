"""Quality check of a prior on the held-out tiles: DiffPIR against the classical baseline of each task.

Same measurements for both, made by the task kinds' own evaluate-mode recipes (docs/algorithm.md §6):
SR ×4 = MATLAB-bicubic downscale + AWGN σ = 0.05 vs bicubic upsampling; Gaussian deblurring = circular
uint8 blur + AWGN σ = 0.05 vs Wiener deconvolution (known kernel and σ); random 50 % inpainting
(noise-free, as the reference) vs biharmonic inpainting. PSNR / SSIM on uint8 RGB, per image and on
average. The DiffPIR settings are resolved as a job's (task preset → prior card → overrides), and each tile is
seeded as a job seeds an image: its degradation from ``degradation_seed(seed, id)``, its sampler generator from
``image_seed(seed, id)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter
from torch import Tensor, nn

from diffpir_core.metrics import float_to_uint8, psnr, ssim
from diffpir_core.runs.batches import image_seed, inputs_from_arrays, synthesise
from diffpir_core.sampling import diffpir_sample, resolve_job_sampler
from diffpir_core.task_kinds import TaskKind, TaskSpec

QUALITY_TASKS: dict[str, dict[str, Any]] = {
    "sr": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
    "deblur": {"kind": "deblur", "kernel": "gaussian", "kernel_size": 15, "kernel_std": 1.6, "noise_sigma": 0.05},
    "inpaint": {"kind": "inpaint", "mask": "random", "mask_ratio": 0.5, "noise_sigma": 0.0},
}
"""The check's tasks (job ``task`` sections). The Gaussian blur's std 1.6 px on 64 px tiles is the
reference's 3–9 px on 256 px images, scaled like the tiles (held-out photos reduced to a 128 px short side)."""


def quality_task(name: str) -> TaskKind:
    """The task of the check called ``name`` (a key of :data:`QUALITY_TASKS`)."""
    if name not in QUALITY_TASKS:
        raise ValueError(f"unknown quality task {name!r}: choose from {sorted(QUALITY_TASKS)}")
    return TypeAdapter(TaskSpec).validate_python(QUALITY_TASKS[name])


@dataclass
class TaskResult:
    """Per-image and mean PSNR/SSIM of DiffPIR and the baseline on one task."""

    task: str
    baseline: str
    sampler: dict[str, Any]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def mean(self, key: str) -> float:
        return float(np.mean([scores[key] for scores in self.per_image.values()]))

    def summary(self) -> dict[str, Any]:
        keys = ("diffpir_psnr", "baseline_psnr", "diffpir_ssim", "baseline_ssim")
        means = {k: self.mean(k) for k in keys}
        gain = means["diffpir_psnr"] - means["baseline_psnr"]
        return {
            "task": self.task,
            "baseline": self.baseline,
            "sampler": self.sampler,
            "seconds": round(self.seconds, 1),
            "mean": means,
            "psnr_gain_db": gain,
            "per_image": self.per_image,
        }


def _scores(out: Tensor, truth_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_u8 = float_to_uint8(out)
    return np.atleast_1d(psnr(out_u8, truth_u8)), np.atleast_1d(ssim(out_u8, truth_u8))


def evaluate_task(
    model: nn.Module,
    name: str,
    tiles: Mapping[str, np.ndarray],
    *,
    prior: str = "demo",
    sampler: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> TaskResult:
    """DiffPIR with ``model`` (the network of ``prior``, whose card gives the settings) vs the task's
    baseline on ``tiles`` (id -> uint8 (H, W, 3)), each tile seeded by its id as a job with seed ``seed`` would
    (independent of batching); ``sampler`` overrides the card's settings."""
    task = quality_task(name)
    config = resolve_job_sampler(task, "diffpir", prior, sampler or {}).config
    settings = config.model_dump(include={"lambda_", "zeta", "iter_num"})
    result = TaskResult(name, task.BASELINE, settings)
    ids = list(tiles)
    start = time.perf_counter()
    for first in range(0, len(ids), batch_size):
        batch_ids = ids[first : first + batch_size]
        truth_u8 = np.stack([tiles[i] for i in batch_ids])
        inputs = inputs_from_arrays(task, batch_ids, synthesise(task, batch_ids, truth_u8, seed, {}))
        generators = [torch.Generator().manual_seed(image_seed(seed, image_id)) for image_id in batch_ids]
        restored = diffpir_sample(model, task.operator(inputs.params), inputs.y, config, generator=generators)
        d_psnr, d_ssim = _scores(restored, truth_u8)
        b_psnr, b_ssim = _scores(task.baseline(inputs.y, inputs.params), truth_u8)
        for k, image_id in enumerate(batch_ids):
            result.per_image[image_id] = {
                "diffpir_psnr": float(d_psnr[k]),
                "baseline_psnr": float(b_psnr[k]),
                "diffpir_ssim": float(d_ssim[k]),
                "baseline_ssim": float(b_ssim[k]),
            }
    result.seconds = time.perf_counter() - start
    return result
