"""Inpainting masks (float32 (H, W), 1 = known) for any image size, seeded per image.

``random_box_mask`` and ``random_mask`` re-implement the DPS generator the reference uses (docs/algorithm.md §6.7):
NumPy's legacy RNG seeded with ``seed`` (the reference uses 0 for every image); their defaults
reproduce the reference's 256×256 masks bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")


def box_mask(height: int, width: int, top: int, left: int, box_height: int, box_width: int) -> Tensor:
    """Mask with the box rows top…top+box_height−1, cols left…left+box_width−1 missing."""
    _check_size(height, width)
    if not (0 <= top and top + box_height <= height and 0 <= left and left + box_width <= width):
        raise ValueError(
            f"box (top {top}, left {left}, {box_height}x{box_width}) does not fit a {height}x{width} image"
        )
    mask = torch.ones(height, width, dtype=torch.float32)
    mask[top : top + box_height, left : left + box_width] = 0
    return mask


def random_box_mask(
    height: int = 256,
    width: int | None = None,
    *,
    seed: int = 0,
    length: tuple[int, int] = (128, 129),
    margin: tuple[int, int] = (16, 16),
) -> Tensor:
    """Box of random size in [length[0], length[1]) placed at random at least ``margin`` (rows, cols)
    from the top/left border and ``margin`` + size from the bottom/right (DPS ``box``)."""
    width = height if width is None else width
    _check_size(height, width)
    rng = np.random.RandomState(seed)
    box_h = rng.randint(*length)
    box_w = rng.randint(*length)
    max_top, max_left = height - margin[0] - box_h, width - margin[1] - box_w
    if max_top <= margin[0] or max_left <= margin[1]:
        raise ValueError(
            f"a box of up to {length[1] - 1} pixels with margin {margin} does not fit a {height}x{width} image; "
            "reduce length or margin"
        )
    top = rng.randint(margin[0], max_top)
    left = rng.randint(margin[1], max_left)
    return box_mask(height, width, int(top), int(left), int(box_h), int(box_w))


def random_mask(height: int = 256, width: int | None = None, *, seed: int = 0, known_fraction: float = 0.5) -> Tensor:
    """Random pixels: exactly ⌊H·W·(1 − known_fraction)⌋ distinct pixels missing (DPS ``random``)."""
    width = height if width is None else width
    _check_size(height, width)
    if not 0 <= known_fraction <= 1:
        raise ValueError(f"known_fraction must lie in [0, 1], got {known_fraction}")
    rng = np.random.RandomState(seed)
    missing = 1 - known_fraction
    prob = rng.uniform(missing, missing)  # the reference draws its fraction from a range; keep the stream
    total = height * width
    drop = rng.choice(total, int(total * prob), replace=False)
    mask = torch.ones(total, dtype=torch.float32)
    mask[torch.from_numpy(drop)] = 0
    return mask.reshape(height, width)


def mask_from_image(path: str | Path, threshold: int = 128) -> Tensor:
    """Mask from an image file: grey level ≥ ``threshold`` (white) = known, darker = missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask image {path} not found")
    with Image.open(path) as img:
        grey = np.array(img.convert("L"))
    return torch.from_numpy((grey >= threshold).astype(np.float32))
