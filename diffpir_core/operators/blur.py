"""Deblurring: circular convolution with a per-image or shared kernel (docs/algorithm.md §5.2 with sf = 1)."""

from __future__ import annotations

from torch import Tensor

from .base import Operator, check_images
from .convolution import CircularConvolution


class Blur(CircularConvolution, Operator):
    """y = k ⊛ x (circular). ``kernel`` is (kh, kw) shared or (B, kh, kw) per image, summing to 1."""

    init_is_noisy_measurement = True

    def __init__(self, kernel: Tensor) -> None:
        super().__init__(kernel, sf=1)

    def init_image(self, y: Tensor) -> Tensor:
        """The blurred measurement itself (x_T uses the t_y form, docs/algorithm.md §4.2)."""
        check_images(y, "y")
        return y
