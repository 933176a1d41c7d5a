"""No-reference check for restore mode: does the restoration explain its measurement?"""

from __future__ import annotations

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
    predicted = operator.A(x_hat)
    if predicted.shape != y.shape:
        raise ValueError(
            f"A(x_hat) has shape {tuple(predicted.shape)} but y has {tuple(y.shape)}; pass the "
            "measurement that this operator produces"
        )
    residual = (y.double() - predicted.double()).reshape(y.shape[0], -1)
    return residual.pow(2).mean(dim=1).sqrt().cpu().numpy()
