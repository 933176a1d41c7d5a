"""Super-resolution by sf in {2, 3, 4, 8}.

``blur`` mode (default, the reference's): y ≈ (k ⊛ x)[::sf, ::sf] with a bicubic-approximating kernel
(ours from ``sr_kernels`` unless ``kernel=`` is given) and the FFT closed form of docs/algorithm.md §5.2.
``cubic`` mode: y = imresize(x, 1/sf) and the reference's iterative back-projection step (docs/algorithm.md §5.4);
its "prox" is that IBP update, not an exact least-squares solve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from .base import DataTerm, Operator, check_estimate, check_images, rho_column
from .convolution import KernelConvolution, check_multiple_of_scale
from .resize import bicubic_upsample, imresize, imresize_adjoint
from .sr_kernels import bicubic_kernel, check_scale
from .svd import OperatorSVD


@dataclass(frozen=True)
class BackProjectionDataTerm:
    """IBP data step: z <- z + gamma * nearest_up(y - imresize(z, 1/sf)) / (1 + rho), ``iterations`` times."""

    y: Tensor
    sf: int
    gamma: float
    iterations: int

    def prox(self, x0: Tensor, rho: Tensor | float) -> Tensor:
        check_estimate(x0, (*self.y.shape[:-2], self.y.shape[-2] * self.sf, self.y.shape[-1] * self.sf))
        x0 = x0.to(self.y.dtype)
        tau = rho_column(rho, x0.shape[0], x0)
        for _ in range(self.iterations):
            z = x0 / 2 + 0.5
            residual = F.interpolate(self.y - imresize(z, 1 / self.sf), scale_factor=self.sf, mode="nearest")
            x0 = (z + self.gamma * residual / (1 + tau)) * 2 - 1
        return x0


class SuperResolution(Operator):
    """Downscaling by ``scale``; ``kernel`` (kh, kw) or (B, kh, kw) overrides our bicubic kernel (blur mode);
    ``boundary`` (blur mode) ``circular`` or ``reflect`` (a camera frame, operators/boundary.py)."""

    init_is_noisy_measurement = False

    def __init__(
        self,
        scale: int,
        kernel: Tensor | None = None,
        mode: Literal["blur", "cubic"] = "blur",
        *,
        boundary: str = "circular",
        gamma: float = 0.01,
        iterations: int = 1,
    ) -> None:
        self.sf = check_scale(scale)
        if mode not in ("blur", "cubic"):
            raise ValueError(f"mode must be 'blur' (FFT closed form) or 'cubic' (back-projection), got {mode!r}")
        if mode == "cubic" and kernel is not None:
            raise ValueError(
                "mode='cubic' uses bicubic imresize as its forward model; drop kernel= or use mode='blur'"
            )
        self.mode = mode
        self.gamma = gamma
        self.iterations = iterations
        self._conv = None
        if mode == "blur":
            self._conv = KernelConvolution(bicubic_kernel(self.sf) if kernel is None else kernel, self.sf, boundary)
        elif boundary != "circular":
            raise ValueError(
                "mode='cubic' has no boundary option (its imresize mirrors the border already); "
                "use mode='blur' for boundary='reflect'"
            )

    @property
    def boundary(self) -> str:
        """``circular`` or ``reflect`` (blur mode; cubic mode is always ``circular`` here, its imresize mirrors)."""
        return "circular" if self._conv is None else self._conv.boundary

    @property
    def kernel(self) -> Tensor | None:
        """The float64 blur kernel(s) (B|1, kh, kw) of blur mode; None in cubic mode."""
        return None if self._conv is None else self._conv.kernel

    @property
    def batch_size(self) -> int | None:
        """Number of per-image kernels (blur mode), or None when shared."""
        return None if self._conv is None else self._conv.batch_size

    def A(self, x: Tensor) -> Tensor:
        if self._conv is not None:
            return self._conv.A(x)
        check_images(x, "x")
        check_multiple_of_scale(x, self.sf)
        return imresize(x, 1 / self.sf)

    def A_adjoint(self, y: Tensor) -> Tensor:
        if self._conv is not None:
            return self._conv.A_adjoint(y)
        check_images(y, "y")
        return imresize_adjoint(y, (y.shape[-2] * self.sf, y.shape[-1] * self.sf), 1 / self.sf)

    def prepare(self, y: Tensor) -> DataTerm:
        if self._conv is not None:
            return self._conv.prepare(y)
        check_images(y, "y")
        return BackProjectionDataTerm(y, self.sf, self.gamma, self.iterations)

    def init_image(self, y: Tensor) -> Tensor:
        """Half-pixel bicubic ×sf upscaling of the low-resolution measurement (docs/algorithm.md §4.2)."""
        check_images(y, "y")
        return bicubic_upsample(y, self.sf)

    def on_canvas(self, y: Tensor, multiple: int = 1) -> Operator:
        """Blur mode with a non-circular boundary: the canvas operator of y; otherwise this operator."""
        if self._conv is None:
            return self
        return self._conv.canvas_operator(self, y, multiple, self.init_image, False)

    @property
    def has_svd(self) -> bool:
        """Blur mode with the circular boundary has the FFT/polyphase SVD; other boundaries and cubic mode have
        none."""
        return self._conv is not None and self._conv.has_svd

    def svd(self, y: Tensor) -> OperatorSVD:
        """The complex polyphase SVD of blur mode (operators/svd.py); cubic mode refuses."""
        if self._conv is None:
            return super().svd(y)
        return self._conv.svd(y)
