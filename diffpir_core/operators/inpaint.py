"""Inpainting: y = m ⊙ x with a binary mask per image (1 = known), data step of docs/algorithm.md §5.5."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Operator, check_batch, check_estimate, check_images, rho_column
from .svd import MaskSVD


def as_mask(mask: Tensor) -> Tensor:
    """Validate a mask (H, W), (B, 1, H, W) or (B, 3, H, W) with values in [0, 1]; return float32 4-D."""
    m = torch.as_tensor(mask)
    if m.ndim == 2:
        m = m[None, None]
    if m.ndim != 4 or m.shape[1] not in (1, 3):
        raise ValueError(
            f"mask must have shape (H, W), (B, 1, H, W) or (B, 3, H, W), got {tuple(torch.as_tensor(mask).shape)}; "
            "convert an (H, W, 3) array with mask.permute(2, 0, 1)[None]"
        )
    m = m.detach().to(device="cpu", dtype=torch.float32)
    if not ((m >= 0) & (m <= 1)).all():
        raise ValueError("mask values must lie in [0, 1] (1 = known pixel, 0 = missing)")
    return m


@dataclass(frozen=True)
class InpaintDataTerm:
    """P(y) and the mask on the measurement's device; prox in diffusion space."""

    y_pm: Tensor
    mask: Tensor

    def prox(self, x0: Tensor, rho: Tensor | float) -> Tensor:
        """x_p = (m ⊙ P(y) + rho x0) / (m + rho), all in diffusion space (docs/algorithm.md §5.5)."""
        check_estimate(x0, self.y_pm.shape)
        x0 = x0.to(self.y_pm.dtype)
        tau = rho_column(rho, x0.shape[0], x0)
        return (self.mask * self.y_pm + tau * x0) / (self.mask + tau)


class Inpainting(Operator):
    """y = m ⊙ x; ``mask`` (H, W) shared or (B, 1|3, H, W) per image, 1 = known."""

    init_is_noisy_measurement = True

    def __init__(self, mask: Tensor) -> None:
        self.mask = as_mask(mask)

    @property
    def batch_size(self) -> int | None:
        """Number of per-image masks, or None when one mask is shared by the batch."""
        return None if self.mask.shape[0] == 1 else self.mask.shape[0]

    def _mask_like(self, x: Tensor, name: str) -> Tensor:
        check_images(x, name)
        check_batch(self.batch_size, x.shape[0], "mask")
        if x.shape[-2:] != self.mask.shape[-2:]:
            raise ValueError(
                f"the mask is {tuple(self.mask.shape[-2:])} but {name} is {tuple(x.shape[-2:])}; "
                "build the mask for the image size (box_mask / random_mask take height and width)"
            )
        return self.mask.to(device=x.device, dtype=x.dtype)

    def A(self, x: Tensor) -> Tensor:
        return self._mask_like(x, "x") * x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._mask_like(y, "y") * y

    def prepare(self, y: Tensor) -> InpaintDataTerm:
        mask = self._mask_like(y, "y")
        return InpaintDataTerm(y_pm=y * 2 - 1, mask=mask)

    def init_image(self, y: Tensor) -> Tensor:
        """The masked measurement (holes 0, i.e. -1 in diffusion space)."""
        return self._mask_like(y, "y") * y

    @property
    def has_svd(self) -> bool:
        """A mask is its own SVD."""
        return True

    def svd(self, y: Tensor) -> MaskSVD:
        """V = U = I, s = the mask (broadcast over channels), on y's device and dtype."""
        return MaskSVD(self._mask_like(y, "y"))
