"""Circular convolution followed by decimation: the forward model of deblurring (sf = 1) and of SR in
``blur`` mode, with the FFT closed-form data step of docs/algorithm.md §5.2."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import as_kernel, check_batch, check_images
from .fft_solve import FFTDataTerm, kernel_otf, zero_upsample
from .svd import FourierSVD


def check_multiple_of_scale(x: Tensor, sf: int) -> None:
    """Decimation by sf needs H and W divisible by sf."""
    height, width = x.shape[-2:]
    if height % sf or width % sf:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the scale {sf}; crop it to "
            f"{height - height % sf}x{width - width % sf} first (modcrop)"
        )


class CircularConvolution:
    """x -> (k ⊛ x)[::sf, ::sf], circular, kernel centred at (kh // 2, kw // 2), one kernel per image or shared."""

    def __init__(self, kernel: Tensor, sf: int) -> None:
        self.kernel = as_kernel(kernel)
        self.sf = sf

    @property
    def batch_size(self) -> int | None:
        """Number of per-image kernels, or None when one kernel is shared by the batch."""
        return None if self.kernel.shape[0] == 1 else self.kernel.shape[0]

    def _kernel_like(self, ref: Tensor, height: int, width: int) -> Tensor:
        check_batch(self.batch_size, ref.shape[0], "kernel")
        kh, kw = self.kernel.shape[-2:]
        if kh > height or kw > width:
            raise ValueError(
                f"the {kh}x{kw} kernel does not fit the {height}x{width} image; use a smaller kernel or a larger image"
            )
        return self.kernel.to(device=ref.device, dtype=ref.dtype).unsqueeze(1)

    def A(self, x: Tensor) -> Tensor:
        check_images(x, "x")
        check_multiple_of_scale(x, self.sf)
        otf = kernel_otf(self._kernel_like(x, *x.shape[-2:]), *x.shape[-2:])
        blurred = torch.real(torch.fft.ifftn(otf * torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1)))
        return blurred[..., :: self.sf, :: self.sf]

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_images(y, "y")
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        otf = kernel_otf(self._kernel_like(y, height, width), height, width)
        up = torch.fft.fftn(zero_upsample(y, self.sf), dim=(-2, -1))
        return torch.real(torch.fft.ifftn(torch.conj(otf) * up, dim=(-2, -1)))

    def prepare(self, y: Tensor) -> FFTDataTerm:
        check_images(y, "y")
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        return FFTDataTerm.build(y, self._kernel_like(y, height, width), self.sf)

    @property
    def has_svd(self) -> bool:
        """Circular convolution (and decimation) always has an SVD through the FFT."""
        return True

    def svd(self, y: Tensor) -> FourierSVD:
        """The complex SVD of this operator at y's size, dtype and device (operators/svd.py)."""
        check_images(y, "y")
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        return FourierSVD(kernel_otf(self._kernel_like(y, height, width), height, width), self.sf)
