"""Synthesising degraded measurements the way the reference does (docs/algorithm.md §6.6)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor


def blur_uint8(images: Tensor | np.ndarray, kernel: Tensor | np.ndarray, mode: str = "wrap") -> Tensor:
    """Blur of uint8 images (H, W, 3) or (N, H, W, 3) with a kernel (kh, kw) or (N, kh, kw).

    SciPy ``ndimage.convolve`` per channel on the uint8 array, so the result is truncated to uint8 like the
    reference's blurred inputs (divide by 255 and add noise afterwards). ``mode``: ``wrap`` (circular, the
    reference's) or ``reflect`` (the half-sample-symmetric border of ``boundary="reflect"``).
    """
    if mode not in ("wrap", "reflect"):
        raise ValueError(f"mode must be 'wrap' (circular) or 'reflect', got {mode!r}")
    imgs = torch.as_tensor(images)
    single = imgs.ndim == 3
    if single:
        imgs = imgs[None]
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (H, W, 3) or (N, H, W, 3), got {imgs.dtype} {tuple(imgs.shape)}")
    k = torch.as_tensor(kernel).detach().cpu()
    k = k[None].expand(imgs.shape[0], -1, -1) if k.ndim == 2 else k
    if k.ndim != 3 or k.shape[0] != imgs.shape[0]:
        raise ValueError(
            f"kernel must be (kh, kw) or one per image (N, kh, kw); got {tuple(k.shape)} for {imgs.shape[0]} images"
        )
    out = [
        torch.from_numpy(ndimage.convolve(img.numpy(), ki.numpy()[..., None], mode=mode))
        for img, ki in zip(imgs.cpu(), k, strict=True)
    ]
    result = torch.stack(out)
    return result[0] if single else result
