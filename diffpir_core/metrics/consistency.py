"""No-reference checks: does the restoration explain its measurement (RMS residual, the discrepancy ratio), and its
SURE estimate of the error in the measurement space?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch


class ForwardOperator(Protocol):
    """Anything with the operators' forward model ``A``: image space (B, 3, H, W) -> measurement."""

    def A(self, x: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def measurement_rms(operator: ForwardOperator, x_hat: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image RMS of y − A(x̂) over all measurement entries, on the [0, 1] scale -> float64 (B,).

    A restoration consistent with its measurement leaves about the noise level σ (the residual is
    the noise); much more means the data term was ignored, much less means the noise was fitted.
    For inpainting the holes are zero in both y and A(x̂), so they lower the RMS by the known fraction.
    """
    return np.sqrt(residual_power(operator, x_hat, y))


@torch.no_grad()
def residual_power(operator: ForwardOperator, x_hat: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image mean square of y − A(x̂) over its m measurement entries, ‖A x̂ − y‖² / m -> float64 (B,)."""
    predicted = operator.A(x_hat)
    if predicted.shape != y.shape:
        raise ValueError(
            f"A(x_hat) has shape {tuple(predicted.shape)} but y has {tuple(y.shape)}; pass the "
            "measurement that this operator produces"
        )
    residual = (y.double() - predicted.double()).reshape(y.shape[0], -1)
    return residual.pow(2).mean(dim=1).cpu().numpy()


def discrepancy(power: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """‖A x̂ − y‖² / (m σ²) per image from :func:`residual_power` and each image's σ -> float64 (B,); NaN where σ = 0.

    Morozov's discrepancy principle: a restoration that explains its measurement down to the noise leaves a residual
    of the noise's power, a ratio of about 1; far below 1 it fitted the noise, far above it ignored the data.
    """
    variance = np.square(np.asarray(sigmas, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(variance > 0, power / variance, np.nan)


def sure(power: np.ndarray, sigmas: Sequence[float], divergence: np.ndarray) -> np.ndarray:
    """Stein's unbiased estimate of the per-entry prediction risk ‖A(x̂ − x)‖² / m of each image -> float64 (B,).

    ``power``: :func:`residual_power`; ``divergence``: div_y(A x̂(y)) / m per image (``runs.probes``). Valid for
    y = A x + n, n ~ N(0, σ² I): E‖A x̂ − y‖²/m = risk + σ² − (2σ²/m)·E div, so SURE = power − σ² + 2σ²·divergence.
    """
    variance = np.square(np.asarray(sigmas, dtype=np.float64))
    return power - variance + 2.0 * variance * np.asarray(divergence, dtype=np.float64)
