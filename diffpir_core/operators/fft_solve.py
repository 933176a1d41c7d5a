"""Closed-form data step for circular blur followed by decimation (docs/algorithm.md §5.2).

x_p = argmin_x ||y - D_sf(k ⊛ x)||^2 + tau ||x - z||^2, solved in the Fourier domain with the
block-averaging identity of Zhao et al. (2016). Operation order and dtypes follow the reference
(float32 / complex64, general sf form even for sf = 1, block mean over a stacked last axis with index
col_block * sf + row_block) because the first DiffPIR steps divide by tau ~ 1e-7 and amplify any change
of rounding (docs/algorithm.md §10.4). Runs in float64/complex128 when given float64 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import check_estimate, rho_column


def kernel_otf(kernel: Tensor, height: int, width: int) -> Tensor:
    """Optical transfer function (..., H, W) of a kernel (..., kh, kw) centred at (kh // 2, kw // 2)."""
    kh, kw = kernel.shape[-2:]
    padded = kernel.new_zeros(kernel.shape[:-2] + (height, width))
    padded[..., :kh, :kw] = kernel
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.fftn(padded, dim=(-2, -1))


def zero_upsample(y: Tensor, sf: int) -> Tensor:
    """U(y): y[i, j] at (sf i, sf j), zeros elsewhere (the adjoint of keeping pixel (0, 0) of each cell)."""
    up = y.new_zeros(y.shape[:-2] + (y.shape[-2] * sf, y.shape[-1] * sf))
    up[..., ::sf, ::sf] = y
    return up


def block_mean(a: Tensor, sf: int) -> Tensor:
    """Average the sf x sf contiguous (H/sf, W/sf) blocks of ``a`` in the reference's summation order."""
    *lead, height, width = a.shape
    h, w = height // sf, width // sf
    blocks = a.reshape(*lead, sf, h, sf, w)  # (row_block, i, col_block, j)
    n = len(lead)
    order = (*range(n), n + 1, n + 3, n + 2, n)  # -> (i, j, col_block, row_block)
    stacked = blocks.permute(order).reshape(*lead, h, w, sf * sf)
    return stacked.mean(dim=-1)


@dataclass(frozen=True)
class FFTDataTerm:
    """Per-measurement Fourier quantities: K, conj(K), block mean of |K|^2 and conj(K) * FFT(U(y))."""

    otf: Tensor
    otf_conj: Tensor
    otf_abs2_mean: Tensor
    otf_conj_fy: Tensor
    sf: int

    @classmethod
    def build(cls, y: Tensor, kernel: Tensor, sf: int) -> FFTDataTerm:
        """y (B, 3, h, w) image space; kernel (B|1, 1, kh, kw) of y's dtype and device."""
        height, width = y.shape[-2] * sf, y.shape[-1] * sf
        otf = kernel_otf(kernel, height, width)
        otf_conj = torch.conj(otf)
        otf_abs2_mean = block_mean(torch.pow(torch.abs(otf), 2), sf)
        otf_conj_fy = otf_conj * torch.fft.fftn(zero_upsample(y, sf), dim=(-2, -1))
        return cls(otf, otf_conj, otf_abs2_mean, otf_conj_fy, sf)

    def solve(self, z: Tensor, tau: Tensor) -> Tensor:
        """Image-space x_p for z (B, 3, H, W) and tau (B|1, 1, 1, 1), both real of the term's precision."""
        sf = self.sf
        r = self.otf_conj_fy + torch.fft.fftn(tau * z, dim=(-2, -1))
        q = self.otf.mul(r)
        v = block_mean(q, sf).div(self.otf_abs2_mean + tau)
        correction = self.otf_conj * v.repeat(1, 1, sf, sf)
        return torch.real(torch.fft.ifftn((r - correction) / tau, dim=(-2, -1)))

    def prox(self, x0: Tensor, rho: Tensor | float) -> Tensor:
        """Diffusion-space x_p: solve on z = x0/2 + 0.5 in image space and map back with 2u - 1."""
        check_estimate(x0, self.otf_conj_fy.shape)
        z = x0.to(self.otf_abs2_mean.dtype) / 2 + 0.5
        tau = rho_column(rho, z.shape[0], z)
        return self.solve(z, tau) * 2 - 1
