"""The operator interface shared by every degradation, and the input checks they all use.

An operator maps an image batch ``x`` (B, 3, H, W), float, [0, 1] scale, to a measurement ``y``.
It knows three things the sampler needs and nothing about diffusion steps:

* ``A(x)`` and ``A_adjoint(y)``: the linear forward model and its adjoint;
* ``prepare(y) -> DataTerm``: per-measurement precomputation (FFTs, masks on the device), whose
  ``prox(x0, rho)`` solves the DiffPIR data sub-problem argmin_x ||y - A(x)||^2 + rho ||x - z||^2 on
  **diffusion-space** tensors (docs/algorithm.md §5; the g-step x̂0 = x̃0 + g (x_p - x̃0) is the sampler's);
* ``init_image(y)``: the image-space estimate x_T is built from (docs/algorithm.md §4.2), and the flag
  ``init_is_noisy_measurement`` telling the sampler which x_T formula applies.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .svd import NoSVDError, OperatorSVD

KERNEL_SUM_TOLERANCE = 1e-3
"""A kernel whose sum is farther than this from 1 is normalised with a warning (the reference ×4
bicubic kernel sums to 0.99990, so reference kernels pass through bit for bit)."""


@runtime_checkable
class DataTerm(Protocol):
    """Data-fidelity term of one measurement batch, ready for repeated proximal steps."""

    def prox(self, x0: Tensor, rho: Tensor | float) -> Tensor:
        """x_p (B, 3, H, W), diffusion space, from the network estimate x0 (diffusion space) and rho_t."""
        ...


class Operator(ABC):
    """A batched linear degradation with a closed-form (or reference-iterative) data step."""

    init_is_noisy_measurement: bool
    """True when x_T is built from the measurement itself with the t_y form of docs/algorithm.md §4.2."""

    @property
    @abstractmethod
    def batch_size(self) -> int | None:
        """Number of per-image parameter sets, or None when one set is shared by any batch."""

    @abstractmethod
    def A(self, x: Tensor) -> Tensor:
        """Forward model: image (B, 3, H, W) -> measurement."""

    @abstractmethod
    def A_adjoint(self, y: Tensor) -> Tensor:
        """Adjoint of ``A``: measurement -> image (B, 3, H, W)."""

    @abstractmethod
    def prepare(self, y: Tensor) -> DataTerm:
        """Precompute what the data step needs for the measurement batch ``y``."""

    @abstractmethod
    def init_image(self, y: Tensor) -> Tensor:
        """Image-space initial estimate (B, 3, H, W) from the measurement ``y``."""

    def on_canvas(self, y: Tensor, multiple: int = 1) -> Operator:
        """The operator a sampler runs on for the measurement ``y``: itself, or for a non-circular boundary one
        whose images are a canvas around the frame with sides multiples of ``multiple`` (operators/boundary.py)."""
        return self

    def crop(self, x: Tensor) -> Tensor:
        """The frame of an image of :meth:`on_canvas`'s operator (the image itself when there is no canvas)."""
        return x

    @property
    def has_svd(self) -> bool:
        """Whether :meth:`svd` exists, so that methods needing it can refuse the operator up front."""
        return False

    def svd(self, y: Tensor) -> OperatorSVD:
        """A = U·diag(s)·Vᴴ for the measurement batch ``y`` (operators/svd.py); here: none."""
        raise NoSVDError(
            f"{type(self).__name__} has no singular value decomposition, which this method needs; "
            "use an operator that has one (inpainting, blur, SR in blur mode) or a method without this need"
        )


def check_images(x: Tensor, name: str) -> None:
    """Refuse anything that is not a floating (B, 3, H, W) batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}; add a batch dimension with "
            "x.unsqueeze(0) or convert HWC arrays with x.permute(2, 0, 1)"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor on the [0, 1] scale, got {x.dtype}; divide uint8 by 255")


def check_batch(param_batch: int | None, batch: int, what: str) -> None:
    """A per-image parameter batch must match the image batch (None = shared by all images)."""
    if param_batch is not None and param_batch != batch:
        raise ValueError(
            f"the operator holds {param_batch} {what}s (one per image) but the batch has {batch} images; "
            f"pass one {what} per image or a single shared {what}"
        )


def as_kernel(kernel: Tensor, normalise_tolerance: float = KERNEL_SUM_TOLERANCE) -> Tensor:
    """Validate a blur kernel (kh, kw) shared or (B, kh, kw) per image; return float64 (B|1, kh, kw).

    Kept in float64 so that both float32 runs (cast once, like the reference) and float64 checks are
    exact. Kernels whose sum is off by more than ``normalise_tolerance`` are normalised with a warning.
    """
    k = torch.as_tensor(kernel)
    if k.ndim not in (2, 3):
        raise ValueError(
            f"kernel must have shape (kh, kw) shared by the batch or (B, kh, kw) per image, got {tuple(k.shape)}"
        )
    if not (k.is_floating_point() and torch.isfinite(k).all()):
        raise ValueError("kernel must hold finite floating-point values")
    k = k.detach().to(device="cpu", dtype=torch.float64)
    if k.ndim == 2:
        k = k.unsqueeze(0)
    sums = k.sum(dim=(-2, -1))
    if (sums <= 0).any():
        raise ValueError(f"kernel sums must be positive (got {sums.tolist()}); a blur kernel must sum to 1")
    off = (sums - 1).abs() > normalise_tolerance
    if off.any():
        warnings.warn(
            f"kernel sums {sums[off].tolist()} differ from 1 by more than {normalise_tolerance}; "
            "normalising them to sum 1 (divide the kernel by its sum yourself to silence this)",
            stacklevel=3,
        )
        k = torch.where(off[:, None, None], k / sums[:, None, None], k)
    return k


def check_estimate(x0: Tensor, shape: torch.Size) -> None:
    """The network estimate given to ``prox`` must have the shape of the restored batch."""
    if tuple(x0.shape) != tuple(shape):
        raise ValueError(
            f"x0 has shape {tuple(x0.shape)} but this measurement batch restores to {tuple(shape)}; "
            "call prepare() with the measurement of this batch"
        )


def rho_column(rho: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """rho as a (B|1, 1, 1, 1) tensor of ``like``'s dtype/device (a scalar, (1,) or (B,) accepted)."""
    r = torch.as_tensor(rho, dtype=like.dtype, device=like.device).reshape(-1)
    if r.numel() not in (1, batch):
        raise ValueError(f"rho must be a scalar or have shape ({batch},) (one per image), got {r.numel()} values")
    return r.reshape(-1, 1, 1, 1)
