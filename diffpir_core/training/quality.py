"""Quality check of a prior on the held-out tiles: DiffPIR against the classical baseline of each task.

Same measurements for both (the orchestration's evaluate-mode recipes, spec §4): SR ×4 = MATLAB-bicubic
downscale + AWGN σ = 0.05 vs bicubic upsampling; Gaussian deblurring = circular uint8 blur + AWGN
σ = 0.05 vs Wiener deconvolution (known kernel and σ); random 50 % inpainting (noise-free, as the
reference) vs biharmonic inpainting. PSNR / SSIM on uint8 RGB, per image and on average.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from diffpir_core.metrics import float_to_uint8, psnr, ssim, uint8_to_float
from diffpir_core.operators import Blur, Inpainting, SuperResolution, add_noise, gaussian_kernel, imresize, random_mask
from diffpir_core.operators.degrade import blur_uint8
from diffpir_core.sampling import DiffPIRConfig, diffpir_sample, task_preset
from diffpir_core.training.baselines import biharmonic_inpaint, bicubic_sr, wiener_deblur

SR_SCALE = 4
NOISE_SIGMA = 0.05
BLUR_KERNEL_SIZE = 15
BLUR_STD = 1.6
"""Gaussian blur of the check: std 1.6 px on 64 px tiles is the reference's 3–9 px on 256 px images,
scaled like the tiles (held-out photos reduced to a 128 px short side)."""
MISSING_FRACTION = 0.5

#: DiffPIR settings of the check (and of the demo) per task: the reference presets re-tuned for the small
#: prior on a few held-out tiles (docs/quality.md): a weak prior wants a smaller λ (trust the measurement)
#: and ζ = 1 (fresh noise every step); inpainting gains from 100 instead of 20 steps.
QUALITY_SAMPLER: dict[str, dict[str, Any]] = {
    "sr": {"lambda_": 2.0, "zeta": 1.0, "iter_num": 100},
    "deblur": {"lambda_": 3.0, "zeta": 1.0, "iter_num": 100},
    "inpaint": {"lambda_": 1.0, "zeta": 1.0, "iter_num": 100},
}


@dataclass(frozen=True)
class Problem:
    """One task's measurements of a batch: the operator DiffPIR uses and the classical restoration."""

    operator: Any
    y: Tensor
    baseline: Callable[[], Tensor]
    noise_sigma: float


def _sr_problem(truth: Tensor, seeds: list[int]) -> Problem:
    y = add_noise(imresize(truth, 1.0 / SR_SCALE), NOISE_SIGMA, seeds)
    return Problem(SuperResolution(SR_SCALE), y, lambda: bicubic_sr(y, SR_SCALE), NOISE_SIGMA)


def _deblur_problem(truth: Tensor, seeds: list[int]) -> Problem:
    kernels = gaussian_kernel(BLUR_KERNEL_SIZE, BLUR_STD)[None].expand(truth.shape[0], -1, -1).contiguous()
    blurred = blur_uint8(float_to_uint8(truth), kernels).permute(0, 3, 1, 2).float() / 255.0
    y = add_noise(blurred, NOISE_SIGMA, seeds)
    return Problem(Blur(kernels), y, lambda: wiener_deblur(y, kernels, NOISE_SIGMA), NOISE_SIGMA)


def _inpaint_problem(truth: Tensor, seeds: list[int]) -> Problem:
    height, width = truth.shape[-2:]
    masks = torch.stack([random_mask(height, width, seed=s, known_fraction=1.0 - MISSING_FRACTION) for s in seeds])
    y = truth * masks[:, None]
    return Problem(Inpainting(masks[:, None]), y, lambda: biharmonic_inpaint(y, masks), 0.0)


PROBLEMS: dict[str, tuple[str, Callable[[Tensor, list[int]], Problem]]] = {
    "sr": ("bicubic", _sr_problem),
    "deblur": ("wiener", _deblur_problem),
    "inpaint": ("biharmonic", _inpaint_problem),
}


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
        return {"task": self.task, "baseline": self.baseline, "sampler": self.sampler,
                "seconds": round(self.seconds, 1), "mean": means, "psnr_gain_db": gain, "per_image": self.per_image}


def _scores(out: Tensor, truth_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_u8 = float_to_uint8(out)
    return np.atleast_1d(psnr(out_u8, truth_u8)), np.atleast_1d(ssim(out_u8, truth_u8))


def evaluate_task(
    model: nn.Module,
    task: str,
    tiles: Mapping[str, np.ndarray],
    *,
    sampler: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> TaskResult:
    """DiffPIR with ``model`` vs the task's baseline on ``tiles`` (id -> uint8 (H, W, 3)). Image i gets
    degradation seed ``seed + i`` and sampler generator seed ``seed + i``, independent of batching."""
    baseline_name, make_problem = PROBLEMS[task]
    settings = {**QUALITY_SAMPLER[task], **(sampler or {})}
    result = TaskResult(task, baseline_name, settings)
    ids = list(tiles)
    start = time.perf_counter()
    for first in range(0, len(ids), batch_size):
        batch_ids = ids[first:first + batch_size]
        truth_u8 = np.stack([tiles[i] for i in batch_ids])
        seeds = [seed + first + k for k in range(len(batch_ids))]
        problem = make_problem(uint8_to_float(truth_u8), seeds)
        config: DiffPIRConfig = task_preset(task, **{**settings, "noise_sigma": problem.noise_sigma})
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        restored = diffpir_sample(model, problem.operator, problem.y, config, generator=generators)
        d_psnr, d_ssim = _scores(restored, truth_u8)
        b_psnr, b_ssim = _scores(problem.baseline(), truth_u8)
        for k, image_id in enumerate(batch_ids):
            result.per_image[image_id] = {"diffpir_psnr": float(d_psnr[k]), "baseline_psnr": float(b_psnr[k]),
                                          "diffpir_ssim": float(d_ssim[k]), "baseline_ssim": float(b_ssim[k])}
    result.seconds = time.perf_counter() - start
    return result


def evaluate_quality(
    model: nn.Module,
    tiles: Mapping[str, np.ndarray],
    tasks: Sequence[str] = tuple(PROBLEMS),
    **kwargs: Any,
) -> list[TaskResult]:
    """:func:`evaluate_task` for each of ``tasks`` (``sr``, ``deblur``, ``inpaint``)."""
    unknown = sorted(set(tasks) - set(PROBLEMS))
    if unknown:
        raise ValueError(f"unknown quality task(s) {unknown}: choose from {sorted(PROBLEMS)}")
    return [evaluate_task(model, task, tiles, **kwargs) for task in tasks]
