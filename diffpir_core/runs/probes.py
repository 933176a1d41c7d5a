"""SURE's probe: the divergence of a restoration's measurement prediction A x̂(y), by a second restoration.

SURE (``diffpir_core.metrics.consistency.sure``) needs div_y A x̂(y), the sensitivity of the predicted measurement
to the measurement. It is estimated by Monte Carlo with one probe per image (Ramani, Blu and Unser 2008):

    div ≈ bᵀ (A x̂(y + ε b) − A x̂(y)) / ε,

b a Rademacher (±1) image of the measurement's shape seeded by (job seed, image id), ε = :data:`EPSILON_PER_SIGMA`
× the image's σ. The second restoration draws its sampler noise from the same per-image generators as the first
(common random numbers), so the sampler's own noise cancels in the difference and only the nudge of y remains.

x̂(y) is the restoration as stored (uint8); x̂(y + ε b) is kept in float and clamped like the stored one. The stored
one's rounding error does not depend on b, so it adds variance to the estimate (about 2σ²·√(v/m)/ε on SURE, v ≤
1/(12·255²) the rounding variance, m the measurement entries) but no bias.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel

from diffpir_core.metrics import uint8_to_float
from diffpir_core.runs.batches import ShardInputs, image_seed, restore_batch
from diffpir_core.runs.job import Job

SURE = "sure"
"""The metric whose rows need the probe."""
EPSILON_PER_SIGMA = 0.2
"""ε / σ: small enough that A x̂ is close to linear over the nudge (the bias it leaves is measured in
``tests/core/tuning``), large enough that the stored x̂'s uint8 rounding and float32 noise stay small next to it."""
EPSILON_FLOOR = 1e-3
"""The smallest ε (σ = 0, or tiny σ): a quarter of a uint8 step, so rounding does not swamp the nudge."""


def restorations_per_image(job: Job) -> int:
    """Sampler runs per image of ``job``: 2 when its metrics ask for ``sure`` (the probe's second run), else 1."""
    return 2 if SURE in job.effective_metrics() else 1


def probe_direction(seed: int, image_id: str, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The Rademacher (±1) probe b of image ``image_id``, float32 of ``shape``, the same in every run and machine."""
    generator = torch.Generator().manual_seed(image_seed(seed, f"sure-probe:{image_id}"))
    return torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int8).to(torch.float32) * 2 - 1


def probe_epsilon(sigma: float) -> float:
    """The nudge ε of an image of noise level ``sigma``: :data:`EPSILON_PER_SIGMA` σ, at least :data:`EPSILON_FLOOR`"""
    return max(EPSILON_PER_SIGMA * sigma, EPSILON_FLOOR)


def probe_divergence(
    predict: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    prediction: torch.Tensor,
    probes: torch.Tensor,
    epsilon: torch.Tensor,
) -> torch.Tensor:
    """div_y A x̂(y) / m per image, float64 (B,): bᵀ(predict(y + ε b) − prediction) / (ε m), ``predict`` mapping a
    measurement batch to A x̂ of it, ``prediction`` = A x̂(y), ``probes`` b of y's shape, ``epsilon`` one per image."""
    nudged = predict(y + epsilon.view(-1, 1, 1, 1).to(y.dtype) * probes)
    change = nudged.double() - prediction.double()
    return (probes.double() * change).flatten(1).sum(1) / epsilon.double().flatten() / probes[0].numel()


def divergences(
    job: Job,
    unet: torch.nn.Module,
    inputs: ShardInputs,
    restored_u8: np.ndarray,
    config: BaseModel,
    *,
    batch_size: int,
    device: str,
) -> dict[str, float]:
    """div_y A x̂(y) / m of every restored image of ``inputs`` (quarantined ones have none), by id: the probe's second
    restoration with ``job``'s method, seeds and fit, in batches of ``batch_size`` (the size the first restoration fit
    in memory)."""
    kept = inputs.kept()
    if not kept:
        return {}
    inputs, task, fit = inputs.select(kept), job.task, job.fit()
    network = fit.network(unet)
    operator = task.operator(inputs.params)

    def predict(y: torch.Tensor) -> torch.Tensor:
        nudged = ShardInputs(inputs.ids, y, inputs.params, inputs.noise_sigma)
        parts = [
            restore_batch(
                network,
                nudged.batch(start, min(start + batch_size, len(inputs.ids))),
                task,
                config,
                seed=job.seed,
                device=device,
                pad=fit.pad,
                method=job.method,
            )
            .detach()
            .float()
            .clamp(0.0, 1.0)
            .cpu()
            for start in range(0, len(inputs.ids), max(1, batch_size))
        ]
        with torch.no_grad():
            return operator.A(torch.cat(parts))

    sigmas = task.sigmas(len(inputs.ids), inputs.noise_sigma)
    probes = torch.stack([probe_direction(job.seed, image_id, inputs.y.shape[1:]) for image_id in inputs.ids])
    epsilon = torch.tensor([probe_epsilon(sigma) for sigma in sigmas])
    with torch.no_grad():
        prediction = operator.A(uint8_to_float(restored_u8[kept]))
    per_entry = probe_divergence(predict, inputs.y, prediction, probes, epsilon)
    return {image_id: float(value) for image_id, value in zip(inputs.ids, per_entry, strict=True)}
