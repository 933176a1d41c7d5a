"""Blur kernel generators: Gaussian (fixed std or the reference's per-image random std, docs/algorithm.md §6.4)
and random-trajectory motion blur (docs/algorithm.md §6.5, our re-implementation of the procedure).

Per-image seeding follows the reference: image ``index`` seeds NumPy's legacy RNG with 10·index.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage
from torch import Tensor


def reference_seed(index: int) -> int:
    """The reference's per-image kernel seed (10·index, index = 0-based position in the sorted file list)."""
    return 10 * index


def gaussian_kernel(size: int, std: float) -> Tensor:
    """float32 (size, size) Gaussian: ``scipy.ndimage.gaussian_filter`` of a centred delta (truncate 4,
    reflect boundary, so tails that reach the border fold back), summing to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be a positive odd integer, got {size}")
    if not std > 0:
        raise ValueError(f"Gaussian std must be positive, got {std}")
    delta = np.zeros((size, size), dtype=np.float64)
    delta[size // 2, size // 2] = 1.0
    return torch.from_numpy(ndimage.gaussian_filter(delta, sigma=std).astype(np.float32))


def reference_gaussian_std(seed: int, base_std: float = 3.0) -> float:
    """The reference's random std: base_std·|2u + 1| with u ~ U[0, 1) after seeding with ``seed`` → [3, 9)."""
    u = np.random.RandomState(seed).uniform()
    return base_std * abs(2 * u + 1)


def reference_gaussian_kernel(index: int, size: int = 61, base_std: float = 3.0) -> Tensor:
    """The reference's Gaussian kernel for image ``index`` (random std, seed 10·index)."""
    return gaussian_kernel(size, reference_gaussian_std(reference_seed(index), base_std))


def _trajectory(rng: np.random.RandomState, side: int, intensity: float) -> list[tuple[float, float]]:
    """Random camera path (points in pixel coordinates of a side×side canvas): docs/algorithm.md §6.5 up to
    the drawing."""
    diagonal = math.sqrt(side**2 + side**2)
    eps = 0.1
    max_length = 0.75 * diagonal * (rng.uniform() + rng.uniform(0, intensity**2))
    steps: list[float] = []
    while sum(steps) < max_length:
        step = rng.beta(1, 30) * (1 - intensity + eps) * diagonal
        if step < max_length:
            steps.append(step)
    max_angle = rng.uniform(0, intensity * math.pi)
    jitter = rng.beta(2, 20)
    angles = [rng.uniform(-max_angle, max_angle)]
    for _ in steps[1:]:
        magnitude = rng.triangular(0, intensity * max_angle, max_angle + eps)
        flip = rng.uniform() < jitter
        sign = float(np.sign(angles[-1]))
        angles.append(-sign * magnitude if flip else sign * magnitude)
    points = np.cumsum(np.array(steps) * np.exp(1j * np.array(angles)))
    centre = sum(points) / len(points)
    rotation = np.exp(1j * rng.uniform(0, math.pi))
    points = (points - centre) * rotation + complex(side, side) / 2
    return [(float(p.real), float(p.imag)) for p in points]


def _motion_kernel_once(rng: np.random.RandomState, size: int, intensity: float) -> np.ndarray:
    side = 2 * size
    diagonal = math.sqrt(side**2 + side**2)
    canvas = Image.new("RGB", (side, side))
    ImageDraw.Draw(canvas).line(_trajectory(rng, side, intensity), width=max(1, int(diagonal / 150)))
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=int(diagonal * 0.01)))
    grey = np.array(canvas.resize((size, size), Image.LANCZOS).convert("L"), dtype=np.float32)
    return grey / grey.sum()


def motion_kernel(seed: int, size: int = 61, intensity: float = 0.5, draw: int = 2) -> Tensor:
    """float32 (size, size) motion-blur kernel: the ``draw``-th trajectory after seeding with ``seed``.

    The reference keeps the second draw (its operator draws one kernel while it is built and then
    another); ``draw=2`` reproduces its kernels, Pillow's rasteriser/filters determine the exact bits.
    """
    if size < 3:
        raise ValueError(f"motion kernel size must be at least 3, got {size}")
    if not 0 <= intensity <= 1:
        raise ValueError(f"motion intensity must lie in [0, 1], got {intensity}")
    if draw < 1:
        raise ValueError(f"draw counts from 1, got {draw}")
    rng = np.random.RandomState(seed)
    for _ in range(draw):
        kernel = _motion_kernel_once(rng, size, intensity)
    return torch.from_numpy(kernel)


def reference_motion_kernel(index: int, size: int = 61, intensity: float = 0.5) -> Tensor:
    """The reference's motion kernel for image ``index`` (seed 10·index, second draw)."""
    return motion_kernel(reference_seed(index), size, intensity)
