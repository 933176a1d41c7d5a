"""Convolution followed by decimation: the forward model of deblurring (sf = 1) and of SR in ``blur`` mode.

``boundary="circular"`` (default): circular convolution with the FFT closed-form data step of
docs/algorithm.md §5.2. ``boundary="reflect"``: a camera's frame of a larger scene; the samplers run on the
canvas operator of ``on_canvas`` (operators/boundary.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import Operator, as_kernel, check_batch, check_images
from .boundary import ReflectConvolution, check_boundary, no_svd_message
from .fft_solve import FFTDataTerm, kernel_otf, zero_upsample
from .svd import FourierSVD, NoSVDError


def check_multiple_of_scale(x: Tensor, sf: int) -> None:
    """Decimation by sf needs H and W divisible by sf."""
    height, width = x.shape[-2:]
    if height % sf or width % sf:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the scale {sf}; crop it to "
            f"{height - height % sf}x{width - width % sf} first (modcrop)"
        )


class KernelConvolution:
    """x -> (k ⊛ x)[::sf, ::sf], kernel centred at (kh // 2, kw // 2), one kernel per image or shared; circular
    or, with ``boundary="reflect"``, of the half-sample-symmetric extension (SciPy ``mode='reflect'``)."""

    def __init__(self, kernel: Tensor, sf: int, boundary: str = "circular") -> None:
        self.kernel = as_kernel(kernel)
        self.sf = sf
        self.boundary = check_boundary(boundary)
        self._reflect = None if boundary == "circular" else ReflectConvolution(self.kernel, sf)

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
        kernel = self._kernel_like(x, *x.shape[-2:])
        if self._reflect is not None:
            return self._reflect.A(x)
        otf = kernel_otf(kernel, *x.shape[-2:])
        blurred = torch.real(torch.fft.ifftn(otf * torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1)))
        return blurred[..., :: self.sf, :: self.sf]

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_images(y, "y")
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        kernel = self._kernel_like(y, height, width)
        if self._reflect is not None:
            return self._reflect.A_adjoint(y)
        otf = kernel_otf(kernel, height, width)
        up = torch.fft.fftn(zero_upsample(y, self.sf), dim=(-2, -1))
        return torch.real(torch.fft.ifftn(torch.conj(otf) * up, dim=(-2, -1)))

    def prepare(self, y: Tensor) -> FFTDataTerm:
        check_images(y, "y")
        if self._reflect is not None:
            raise ValueError(
                f"boundary {self.boundary!r}: the data step lives on a canvas around the frame; "
                "use op.on_canvas(y) and its prepare(y), init_image(y) and crop(x) (the samplers do)"
            )
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        return FFTDataTerm.build(y, self._kernel_like(y, height, width), self.sf)

    def canvas_operator(
        self, owner: Operator, y: Tensor, multiple: int, init: Callable[[Tensor], Tensor], noisy_init: bool
    ) -> Operator:
        """``on_canvas`` of the operator ``owner`` built on this convolution (``init`` = its frame ``init_image``):
        ``owner`` itself for the circular boundary."""
        check_images(y, "y")
        if self._reflect is None:
            return owner
        self._kernel_like(y, y.shape[-2] * self.sf, y.shape[-1] * self.sf)
        return self._reflect.on_canvas(y, multiple, init, noisy_init)

    @property
    def has_svd(self) -> bool:
        """Circular convolution (and decimation) has an SVD through the FFT; other boundaries have none."""
        return self._reflect is None

    def svd(self, y: Tensor) -> FourierSVD:
        """The complex SVD of this operator at y's size, dtype and device (operators/svd.py)."""
        if self._reflect is not None:
            raise NoSVDError(no_svd_message(self.boundary))
        check_images(y, "y")
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        return FourierSVD(kernel_otf(self._kernel_like(y, height, width), height, width), self.sf)
