"""Thin singular value decompositions A = U·diag(s)·Vᴴ of the operators that have one (used by DDRM).

Only the part of image space that A sees is explicit. ``Vt(x)`` gives the coordinates of an image along
the right singular vectors, one per measurement coordinate and laid out like the measurement;
``V`` maps coordinates back; ``Ut`` and ``U`` map a measurement to and from the same coordinates;
``singulars`` holds s ≥ 0 (a zero is a direction A does not see). The rest of image space is A's null
space, reached through ``null(x) = x − V(Vt(x))``: methods that use the SVD treat all its directions
alike, so they need no basis of it.

* Inpainting: V = U = I, s = the mask (docs/methods.md §DDRM).
* Circular blur followed by decimation by sf (deblurring, SR in ``blur`` mode): a complex SVD through the
  FFT. With unitary DFTs, each low-resolution frequency κ only mixes its sf² aliases κ_j of the
  high-resolution spectrum, through the row r(κ) = (K̂(κ_j) / sf)_j; so s(κ) = ‖r(κ)‖, the right
  singular vector is conj(r)/s on those aliases, and U is the inverse unitary DFT of the measurement.
  No separable kernel is needed. Coordinates are complex; images built from real images are real up
  to rounding (take ``.real``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class NoSVDError(ValueError):
    """The operator has no SVD, so a method that needs one (DDRM) cannot run on it."""


class OperatorSVD(ABC):
    """A = U·diag(s)·Vᴴ restricted to the measured directions; ``singulars`` broadcasts against coordinates."""

    singulars: Tensor
    """Real s ≥ 0, shape (B|1, 1|3, h, w), broadcastable against ``Vt(x)`` and ``Ut(y)``."""

    @abstractmethod
    def Vt(self, x: Tensor) -> Tensor:
        """Vᴴx: coordinates (B, 3, h, w) of the image batch x (B, 3, H, W)."""

    @abstractmethod
    def V(self, z: Tensor) -> Tensor:
        """V·z: the image (B, 3, H, W) with coordinates z (complex for a complex SVD)."""

    @abstractmethod
    def Ut(self, y: Tensor) -> Tensor:
        """Uᴴy: coordinates (B, 3, h, w) of the measurement y."""

    @abstractmethod
    def U(self, z: Tensor) -> Tensor:
        """U·z: the measurement with coordinates z."""

    def null(self, x: Tensor) -> Tensor:
        """The component of x in A's null space, x − V·Vᴴx."""
        return x - self.V(self.Vt(x))

    def A(self, x: Tensor) -> Tensor:
        """U·diag(s)·Vᴴx, real part: equals the operator's A(x) (what the SVD tests check)."""
        out = self.U(self.singulars * self.Vt(x))
        return out.real if out.is_complex() else out


class MaskSVD(OperatorSVD):
    """Inpainting y = m ⊙ x: V = U = I and s = m (0 at the holes), per image or shared."""

    def __init__(self, mask: Tensor) -> None:
        self.singulars = mask

    def Vt(self, x: Tensor) -> Tensor:
        return x

    def V(self, z: Tensor) -> Tensor:
        return z

    def Ut(self, y: Tensor) -> Tensor:
        return y

    def U(self, z: Tensor) -> Tensor:
        return z


def _to_blocks(spectrum: Tensor, sf: int) -> Tensor:
    """(..., H, W) -> (..., h, w, sf²): entry a·sf + b of κ is the alias (κ1 + a·h, κ2 + b·w)."""
    *lead, height, width = spectrum.shape
    h, w = height // sf, width // sf
    n = len(lead)
    blocks = spectrum.reshape(*lead, sf, h, sf, w).permute(*range(n), n + 1, n + 3, n, n + 2)
    return blocks.reshape(*lead, h, w, sf * sf)


def _from_blocks(blocks: Tensor, sf: int) -> Tensor:
    """The inverse of :func:`_to_blocks`."""
    *lead, h, w, _ = blocks.shape
    n = len(lead)
    spectrum = blocks.reshape(*lead, h, w, sf, sf).permute(*range(n), n + 2, n, n + 3, n + 1)
    return spectrum.reshape(*lead, h * sf, w * sf)


class FourierSVD(OperatorSVD):
    """x -> (k ⊛ x)[::sf, ::sf] with circular k: complex SVD through unitary DFTs (module docstring).

    ``otf`` (B|1, 1, H, W) is the kernel's transfer function K̂ as the operator uses it
    (``kernel_otf``). Where s(κ) = 0 the right singular vector is taken uniform over the aliases, so
    that V·Vᴴ stays a real projection.
    """

    def __init__(self, otf: Tensor, sf: int) -> None:
        self.sf = sf
        rows = _to_blocks(otf, sf) / sf
        self.singulars = torch.linalg.vector_norm(rows, dim=-1)
        safe = torch.where(self.singulars > 0, self.singulars, torch.ones_like(self.singulars))
        uniform = torch.full_like(rows, 1.0 / sf)
        self._v = torch.where(self.singulars[..., None] > 0, rows.conj() / safe[..., None], uniform)

    def Vt(self, x: Tensor) -> Tensor:
        spectrum = _to_blocks(torch.fft.fft2(x, norm="ortho"), self.sf)
        return (self._v.conj() * spectrum).sum(dim=-1)

    def V(self, z: Tensor) -> Tensor:
        return torch.fft.ifft2(_from_blocks(self._v * z[..., None], self.sf), norm="ortho")

    def Ut(self, y: Tensor) -> Tensor:
        return torch.fft.fft2(y, norm="ortho")

    def U(self, z: Tensor) -> Tensor:
        return torch.fft.ifft2(z, norm="ortho")
