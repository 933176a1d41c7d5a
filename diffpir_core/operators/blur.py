"""Deblurring: convolution with a per-image or shared kernel, circular (docs/algorithm.md §5.2 with sf = 1) or
with a camera-like boundary (operators/boundary.py)."""

from __future__ import annotations

from torch import Tensor

from .base import Operator, check_images
from .convolution import KernelConvolution


class Blur(KernelConvolution, Operator):
    """y = k ⊛ x. ``kernel`` is (kh, kw) shared or (B, kh, kw) per image, summing to 1; ``boundary`` is
    ``circular`` (the reference's wrap-around) or ``reflect`` (a camera: the scene goes on past the frame)."""

    init_is_noisy_measurement = True

    def __init__(self, kernel: Tensor, boundary: str = "circular") -> None:
        super().__init__(kernel, sf=1, boundary=boundary)

    def init_image(self, y: Tensor) -> Tensor:
        """The blurred measurement itself (x_T uses the t_y form, docs/algorithm.md §4.2)."""
        check_images(y, "y")
        return y

    def on_canvas(self, y: Tensor, multiple: int = 1) -> Operator:
        return self.canvas_operator(self, y, multiple, self.init_image, True)
