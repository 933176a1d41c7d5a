"""Classical restorations the demo prior is compared against, each given what DiffPIR is given.

* SR: bicubic upsampling of the noisy low-resolution image (DiffPIR's own initial estimate).
* Deblurring: Wiener deconvolution with the known kernel and noise level (mirror-padded for a camera boundary);
  the unknown image spectrum is the classical natural-image model E|X(f)|² = A / |f|², A fitted to the
  measurement's energy.
* Inpainting: biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``) of the missing pixels.

All take and return float (B, 3, H, W) images in [0, 1] (outputs clamped).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic
from torch import Tensor

from diffpir_core.operators import bicubic_upsample
from diffpir_core.operators.boundary import symmetric_extend


def bicubic_sr(y: Tensor, scale: int) -> Tensor:
    """Half-pixel bicubic ×``scale`` upsampling of the low-resolution batch."""
    return bicubic_upsample(y, scale).clamp(0, 1)


def _otf(kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """FFT of the kernel zero-padded to (height, width) with its centre moved to (0, 0): the transfer
    function of the circular convolution ``ndimage.convolve(mode='wrap')``. A kernel larger than the image wraps
    around it (its taps add up modulo the size), as a circular convolution with it does."""
    kh, kw = kernel.shape
    padded = np.zeros((height, width))
    rows = (np.arange(kh) - kh // 2) % height
    cols = (np.arange(kw) - kw // 2) % width
    np.add.at(padded, (rows[:, None], cols[None, :]), kernel)
    return np.fft.fft2(padded)


def wiener_deblur(
    y: Tensor, kernels: Tensor, noise_sigma: float | Sequence[float], boundary: str = "circular"
) -> Tensor:
    """Wiener deconvolution of (B, 3, H, W) ``y`` with per-image kernels (B, kh, kw) and AWGN std
    ``noise_sigma`` on the [0, 1] scale (one for the batch or one per image): X = K̄·Y / (|K|² + N·σ²·|f|² / A),
    per channel, DC kept. ``boundary="reflect"`` (a camera's frame) first mirrors y by the kernel size on every
    side, so that the periodic extension the FFT assumes has no jump at the border, and crops the result back:
    the classical edge treatment, without which the baseline shows the same border frame as a circular data step."""
    batch, channels, height, width = y.shape
    sigmas = [float(noise_sigma)] * batch if isinstance(noise_sigma, int | float) else [float(s) for s in noise_sigma]
    kh, kw = kernels.shape[-2:]
    pad_h, pad_w = (kh, kw) if boundary != "circular" else (0, 0)
    padded = symmetric_extend(y.double(), pad_h, pad_h, pad_w, pad_w).numpy()
    ph, pw = padded.shape[-2:]
    fy = np.fft.fftfreq(ph)[:, None]
    fx = np.fft.fftfreq(pw)[None, :]
    f2 = fy**2 + fx**2  # 0 at DC: the mean is not regularised (A/|f|² -> infinity there)
    inv_f2 = np.divide(1.0, f2, out=np.zeros_like(f2), where=f2 > 0)
    out = np.empty((batch, channels, ph, pw))
    for b in range(batch):
        noise_energy = ph * pw * sigmas[b] ** 2
        otf = _otf(kernels[b].double().numpy(), ph, pw)
        gain = np.abs(otf) ** 2
        for c in range(channels):
            spec = np.fft.fft2(padded[b, c])
            energy = float(np.sum(np.abs(spec) ** 2) - np.abs(spec[0, 0]) ** 2)
            signal = max(energy - (ph * pw - 1) * noise_energy, 1e-12)
            amplitude = signal / float(np.sum(gain * inv_f2))
            out[b, c] = np.real(np.fft.ifft2(np.conj(otf) * spec / (gain + noise_energy * f2 / amplitude)))
    restored = torch.from_numpy(out[..., pad_h : pad_h + height, pad_w : pad_w + width].copy())
    return restored.float().clamp(0, 1)


def biharmonic_inpaint(y: Tensor, masks: Tensor) -> Tensor:
    """Biharmonic inpainting of the pixels where ``masks`` (B, H, W) is 0 (1 = known); an image without a known pixel
    has nothing to interpolate from and comes back as its measurement."""
    out = []
    for image, mask in zip(y, masks, strict=True):
        if not (mask >= 0.5).any():
            out.append(image.double())
            continue
        filled = inpaint_biharmonic(image.permute(1, 2, 0).double().numpy(), mask.numpy() < 0.5, channel_axis=-1)
        out.append(torch.from_numpy(filled).permute(2, 0, 1))
    return torch.stack(out).float().clamp(0, 1)
