"""Conversions that fix how images are quantised and reduced to luma before they are scored.

The reference (DiffPIR ``utils_image``) scores uint8 images: a float output is clamped to [0, 1],
multiplied by 255 in float32, rounded half to even, and cast to uint8. Luma follows ITU-R BT.601 on
uint8 RGB (MATLAB ``rgb2ycbcr``), rounded back to uint8.
"""

from __future__ import annotations

import numpy as np
import torch

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def float_to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Quantise float images in [0, 1] like the reference: clamp, ×255 in float32, round, uint8.

    Accepts a tensor (B, 3, H, W) or (3, H, W) — returned channels-last as (B, H, W, 3) / (H, W, 3) —
    or a channels-last numpy array (…, H, W, 3), returned with the same shape.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(
                f"expected a (B, 3, H, W) or (3, H, W) tensor, got shape {tuple(images.shape)}; "
                "pass channels-first RGB tensors (or a channels-last numpy array)"
            )
        array = images.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).numpy()
        array = np.moveaxis(array, -3, -1)
    else:
        array = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    return np.round(array * np.float32(255.0)).astype(np.uint8)


def uint8_to_float(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 channels-last images (N, H, W, 3) -> float32 tensor (N, 3, H, W) in [0, 1]."""
    array = _check_u8(images_u8, "images_u8")
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2))).float().div_(255.0)


def rgb_to_y_uint8(images_u8: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 RGB (…, H, W, 3): RGB·[65.481, 128.553, 24.966]/255 + 16, rounded to uint8."""
    array = _check_u8(images_u8, "images_u8")
    y = array.astype(np.float64) @ _Y_WEIGHTS / 255.0 + 16.0
    return np.round(y).astype(np.uint8)


def crop_border(images: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels on each side of the (H, W) axes of (…, H, W, C) images."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return images
    height, width = images.shape[-3], images.shape[-2]
    if 2 * border >= min(height, width):
        raise ValueError(f"border {border} leaves nothing of a {height}x{width} image; use a smaller border")
    return images[..., border:-border, border:-border, :]


def _check_u8(images: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 (quantise float images with float_to_uint8 first), got {array.dtype}")
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"{name} must be channels-last RGB, (H, W, 3) or (N, H, W, 3); got shape {array.shape}")
    return array
