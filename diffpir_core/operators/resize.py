"""Bicubic resizing: the MATLAB ``imresize`` port used to synthesise SR inputs (docs/algorithm.md §6.3) and the
half-pixel bicubic upscaling used to initialise SR sampling (docs/algorithm.md §4.2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _keys_cubic(x: Tensor) -> Tensor:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = 1.5 * ax3 - 2.5 * ax2 + 1
    far = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return torch.where(ax <= 1, near, torch.where(ax <= 2, far, torch.zeros_like(ax)))


def imresize_matrix(in_len: int, scale: float, antialias: bool = True) -> Tensor:
    """Dense float64 (out_len, in_len) matrix of MATLAB bicubic ``imresize`` along one axis.

    Output length ceil(in_len * scale); output pixel x (1-based) samples input position
    u = x / scale + (1 - 1 / scale) / 2; when downscaling with antialiasing the kernel is stretched by
    1 / scale; each row is normalised; out-of-range taps mirror symmetrically (edge pixel repeated).
    """
    out_len = math.ceil(in_len * scale)
    stretch = scale < 1 and antialias
    width = 4.0 / scale if stretch else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _keys_cubic(dist * scale) if stretch else _keys_cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    j = idx.long() - 1  # 0-based input index, then mirrored into range
    j = torch.where(j < 0, -j - 1, j)
    j = torch.where(j >= in_len, 2 * in_len - 1 - j, j)
    if (j < 0).any() or (j >= in_len).any():
        raise ValueError(f"an axis of length {in_len} is too short for bicubic resizing by {scale}")
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, j, weights)
    return matrix


def imresize(x: Tensor, scale: float, antialias: bool = True) -> Tensor:
    """MATLAB-compatible bicubic resize of x (..., H, W) by ``scale`` (e.g. 1/4), output not clipped.

    Computed in float64 and returned in x's dtype; matches the reference NumPy port to < 1e-6.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., H, W), got {tuple(x.shape)}")
    mh = imresize_matrix(x.shape[-2], scale, antialias).to(x.device)
    mw = imresize_matrix(x.shape[-1], scale, antialias).to(x.device)
    out = mh @ x.to(torch.float64) @ mw.T
    return out.to(x.dtype)


def imresize_adjoint(y: Tensor, in_shape: tuple[int, int], scale: float, antialias: bool = True) -> Tensor:
    """Adjoint of ``imresize`` from an output (..., h, w) back to an input of shape ``in_shape``."""
    mh = imresize_matrix(in_shape[0], scale, antialias).to(y.device)
    mw = imresize_matrix(in_shape[1], scale, antialias).to(y.device)
    return (mh.T @ y.to(torch.float64) @ mw).to(y.dtype)


def bicubic_upsample(y: Tensor, sf: int) -> Tensor:
    """Half-pixel bicubic ×sf upscaling with A = -0.75, not clipped (OpenCV INTER_CUBIC to 2.4e-7)."""
    if y.ndim != 4:
        raise ValueError(f"y must have shape (B, C, h, w), got {tuple(y.shape)}")
    return F.interpolate(y, size=(y.shape[-2] * sf, y.shape[-1] * sf), mode="bicubic", align_corners=False)
