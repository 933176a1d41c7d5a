"""Additive white Gaussian noise with the reference's semantics (docs/algorithm.md §6.2), seeded per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import check_images


def _per_image(value: float | Sequence[float], batch: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) else [value] * batch
    if len(values) != batch:
        raise ValueError(f"{name} must be one value or one per image ({batch}), got {len(values)}")
    return values


def add_noise(x: Tensor, sigma: float | Sequence[float], seed: int | Sequence[int]) -> Tensor:
    """x + N(0, sigma²) per image, sigma on the [0, 1] scale; float32 result, not clipped.

    As the reference does it: in diffusion space u = 2x − 1 (float32), NumPy's legacy RNG seeded with
    the image's seed adds one float64 N(0, (2σ)²) draw per element in (H, W, 3) C order, then
    u / 2 + 0.5. The reference seeds 0 for every image (``seed=0``); pass one seed per image to
    decorrelate them.
    """
    check_images(x, "x")
    sigmas = _per_image(sigma, x.shape[0], "sigma")
    seeds = _per_image(seed, x.shape[0], "seed")
    out = []
    for img, s, sd in zip(x.detach().cpu().to(torch.float32), sigmas, seeds, strict=True):
        if s < 0:
            raise ValueError(f"noise sigma must be non-negative, got {s}")
        u = img.permute(1, 2, 0).numpy() * 2 - 1
        u += np.random.RandomState(sd).normal(0, 2 * s, u.shape)
        out.append(torch.from_numpy(u / 2 + 0.5).permute(2, 0, 1))
    return torch.stack(out).to(device=x.device)
