"""Camera-like boundaries for blur and blur-and-decimate (SR): the scene extends past the frame.

A camera's blurred (or downscaled) photo is the *valid* part of the blur of a larger scene: the pixels near a
border saw scene content outside the frame. The circular model of docs/algorithm.md §5.2 instead wraps the
opposite border in, which is exact for the reference's synthetic ``mode='wrap'`` blur and wrong at every border
of a real photo. With ``boundary="reflect"`` the sampler works on an extended **canvas** (the frame plus the
kernel's reach, rounded up to what the network takes): the measurement observes only the frame's window of
D_sf(k ⊛ x), the pixels beyond it are unknowns the prior fills, and the output is cropped back to the frame.

The data step on the canvas, x_p = argmin ‖M ⊙ D(k ⊛ x) − y‖² + τ‖x − z‖² (M the window), has no closed form;
:class:`WindowDataTerm` solves its normal equations by conjugate gradients preconditioned with the circular
closed form (exact when M = I), started from the circular solution with the unobserved measurements imputed
from z. The canvas convolution is circular, but no observed pixel's support wraps, so it equals the valid
convolution of the canvas scene.

``A`` of an operator with ``boundary="reflect"`` on a frame-sized image is the same-size convolution of its
half-sample-symmetric extension (SciPy ``mode='reflect'``): the forward model evaluate mode synthesises with
and the consistency check scores against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .base import DataTerm, Operator, check_batch, check_estimate, check_images, rho_column
from .fft_solve import block_mean, kernel_otf, zero_upsample
from .svd import NoSVDError, OperatorSVD

Boundary = Literal["circular", "reflect"]
BOUNDARIES: tuple[str, ...] = ("circular", "reflect")
"""``circular``: wrap-around (the reference's synthetic blur, FFT closed form); ``reflect``: a camera's frame of a
larger scene (evaluate mode mirrors the ground truth to synthesise it; the data step treats the exterior as
unknown)."""

CG_TOLERANCE = 1e-3
"""Default stopping rule of the canvas data step: the residual of the normal equations falls to this fraction of
the start's, per image and channel."""
CG_ITERATIONS = 20
"""Default cap on conjugate-gradient iterations per data step."""


def check_boundary(boundary: str) -> str:
    """``boundary`` if it is one of :data:`BOUNDARIES`, else an error listing them."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    return boundary


def symmetric_index(length: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a half-sample-symmetric extension (d c b a | a b c d | d c b a) of ``length`` samples by
    ``before`` and ``after`` samples, repeating the reflection as often as needed."""
    i = torch.arange(-before, length + after, device=device) % (2 * length)
    return torch.where(i >= length, 2 * length - 1 - i, i)


def symmetric_extend(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """``x`` (..., H, W) extended half-sample-symmetrically (SciPy ``mode='reflect'``) on every side."""
    rows = symmetric_index(x.shape[-2], top, bottom, x.device)
    cols = symmetric_index(x.shape[-1], left, right, x.device)
    return x[..., rows, :][..., cols]


def _fold(g: Tensor, height: int, width: int, top: int, left: int) -> Tensor:
    """Adjoint of :func:`symmetric_extend`: every extended sample added back onto the sample it copies."""
    rows = symmetric_index(height, top, g.shape[-2] - height - top, g.device)
    cols = symmetric_index(width, left, g.shape[-1] - width - left, g.device)
    out = g.new_zeros(*g.shape[:-1], width).index_add_(-1, cols, g)
    return out.new_zeros(*g.shape[:-2], height, width).index_add_(-2, rows, out)


def _circular(x: Tensor, otf: Tensor) -> Tensor:
    return torch.real(torch.fft.ifftn(otf * torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1)))


@dataclass(frozen=True)
class Canvas:
    """Where the frame lies on the canvas: canvas size (height, width), the frame's high-resolution offset
    (top, left, multiples of sf) and its measurement-grid size (rows, cols)."""

    height: int
    width: int
    top: int
    left: int
    rows: int
    cols: int
    sf: int

    @classmethod
    def around(cls, rows: int, cols: int, kernel_size: tuple[int, int], sf: int, multiple: int) -> Canvas:
        """The smallest canvas holding every scene pixel the frame's measurement saw, with sides multiples of
        lcm(multiple, sf): a kernel centred at c reaches kh − 1 − c pixels up and c down."""
        step = math.lcm(multiple, sf)
        (kh, kw), sides = kernel_size, []
        for n, k in ((rows, kh), (cols, kw)):
            c = k // 2
            offset = -(-(k - 1 - c) // sf) * sf
            need = max(offset + sf * (n - 1) + c + 1, offset + sf * n)
            sides.append((-(-need // step) * step, offset))
        (height, top), (width, left) = sides
        return cls(height, width, top, left, rows, cols, sf)

    def crop(self, x: Tensor) -> Tensor:
        """The frame (..., rows·sf, cols·sf) of a canvas image."""
        return x[..., self.top : self.top + self.rows * self.sf, self.left : self.left + self.cols * self.sf]

    def window(self, low: Tensor) -> Tensor:
        """The measured window (..., rows, cols) of a measurement-grid canvas array."""
        top, left = self.top // self.sf, self.left // self.sf
        return low[..., top : top + self.rows, left : left + self.cols]

    def embed(self, y: Tensor) -> Tensor:
        """A measurement (..., rows, cols) placed in its window of a zero measurement-grid canvas (Mᵀ)."""
        low = y.new_zeros(*y.shape[:-2], self.height // self.sf, self.width // self.sf)
        self.window(low).copy_(y)
        return low

    def extend(self, image: Tensor) -> Tensor:
        """A frame-sized image continued half-sample-symmetrically over the canvas (the sampler's start)."""
        return symmetric_extend(
            image,
            self.top,
            self.height - self.top - image.shape[-2],
            self.left,
            self.width - self.left - image.shape[-1],
        )


class WindowDataTerm:
    """The canvas data step x_p = argmin ‖M ⊙ D(k ⊛ x) − y‖² + τ‖x − z‖², by preconditioned conjugate gradients.

    Normal equations (KᵀDᵀMDK + τ) x = KᵀDᵀMy + τz; preconditioner P = KᵀDᵀDK + τ, the circular closed form of
    docs/algorithm.md §5.2 in the Fourier domain (real FFTs for sf = 1), so that the solve is exact at once where
    the window is the whole canvas. Start: z, or (warm start) the last solution where its residual is smaller.
    One step size per image and channel (channels and images never mix, so a batch gives each image's own
    result); a channel stops once ‖r‖ ≤ ``tolerance``·‖r₀‖, all after ``iterations`` steps. ``last_iterations``
    and ``last_residual`` (‖r‖/‖b‖ per image and channel) report the last solve.
    """

    def __init__(self, y: Tensor, kernel: Tensor, canvas: Canvas, tolerance: float, iterations: int) -> None:
        self.canvas, self.sf = canvas, canvas.sf
        self.size = (canvas.height, canvas.width)
        self.tolerance, self.iterations = tolerance, iterations
        otf = kernel_otf(kernel, canvas.height, canvas.width)
        weight = torch.ones(otf.shape[-1], dtype=y.dtype, device=y.device)
        if self.sf == 1:
            otf = otf[..., : canvas.width // 2 + 1]  # a real kernel's rfft is the first half of its fft
            weight = torch.full((otf.shape[-1],), 2.0, dtype=y.dtype, device=y.device)
            weight[0] = 1.0
            if canvas.width % 2 == 0:
                weight[-1] = 1.0
        self.parseval = weight / (canvas.height * canvas.width)  # ⟨a, b⟩ from half (sf = 1) or full spectra
        self.otf, self.otf_conj = otf, torch.conj(otf)
        self.gain = block_mean(torch.abs(otf) ** 2, self.sf)
        self.mask = canvas.embed(torch.ones_like(y[:, :1]))
        self.rhs_data = self._fft(self.adjoint_low(canvas.embed(y)))
        self.shape = (y.shape[0], y.shape[1], canvas.height, canvas.width)
        self.warm_start = True
        self.last_iterations = 0
        self.last_residual = torch.zeros(())
        self._previous: Tensor | None = None

    def _fft(self, x: Tensor) -> Tensor:
        return torch.fft.rfftn(x, dim=(-2, -1)) if self.sf == 1 else torch.fft.fftn(x, dim=(-2, -1))

    def _ifft(self, spectrum: Tensor) -> Tensor:
        if self.sf == 1:
            return torch.fft.irfftn(spectrum, s=self.size, dim=(-2, -1))
        return torch.real(torch.fft.ifftn(spectrum, dim=(-2, -1)))

    def adjoint_low(self, low: Tensor) -> Tensor:
        """KᵀDᵀ of a measurement-grid canvas array."""
        return self._ifft(self.otf_conj * self._fft(zero_upsample(low, self.sf)))

    def normal(self, spectrum: Tensor, tau: Tensor) -> Tensor:
        """Spectrum of (KᵀDᵀMDK + τ) x from x's spectrum: the only step in image space is the window M."""
        low = self.mask * self._ifft(self.otf * spectrum)[..., :: self.sf, :: self.sf]
        return self.otf_conj * self._fft(zero_upsample(low, self.sf)) + tau * spectrum

    def precondition(self, r: Tensor, tau: Tensor) -> Tensor:
        """Spectrum of (KᵀDᵀDK + τ)⁻¹ r from r's spectrum, by the block identity of docs/algorithm.md §5.2."""
        sf = self.sf
        if sf == 1:
            return r / (self.gain + tau)
        v = block_mean(self.otf * r, sf) / (self.gain + tau)
        return (r - self.otf_conj * v.repeat(1, 1, sf, sf)) / tau

    def _dot(self, a: Tensor, b: Tensor) -> Tensor:
        """⟨IFFT a, IFFT b⟩ per image and channel, by Parseval."""
        return (torch.real(a * torch.conj(b)) * self.parseval).sum(dim=(-2, -1), keepdim=True)

    def solve(self, z: Tensor, tau: Tensor) -> Tensor:
        """Image-space x_p on the canvas for z (B, C, H, W) and tau (B|1, 1, 1, 1). Conjugate gradients run on
        spectra (two FFTs per iteration, for the window); x returns to image space once, at the end."""
        x = self._fft(z)
        b = self.rhs_data + tau * x
        r = b - self.normal(x, tau)
        if self.warm_start and self._previous is not None:  # the last solution, where it is the closer start
            r_warm = b - self.normal(self._previous, tau)
            closer = self._dot(r_warm, r_warm) < self._dot(r, r)
            x, r = torch.where(closer, self._previous, x), torch.where(closer, r_warm, r)
        target = self.tolerance**2 * self._dot(r, r)
        active = self._dot(r, r) > target
        p = self.precondition(r, tau)
        rs = self._dot(r, p)
        done = 0
        while done < self.iterations and bool(active.any()):
            q = self.normal(p, tau)
            alpha = torch.where(active, rs / self._dot(p, q), torch.zeros_like(rs))
            x = x + alpha * p
            r = r - alpha * q
            active = active & (self._dot(r, r) > target)
            s = self.precondition(r, tau)
            rs_new = self._dot(r, s)
            p = s + torch.where(active, rs_new / rs, torch.zeros_like(rs)) * p
            rs = rs_new
            done += 1
        self.last_iterations = done
        self.last_residual = (self._dot(r, r) / self._dot(b, b)).sqrt()
        if self.warm_start:
            self._previous = x
        return self._ifft(x)

    def prox(self, x0: Tensor, rho: Tensor | float) -> Tensor:
        """Diffusion-space x_p on the canvas: solved on z = x0/2 + 0.5, mapped back with 2u − 1."""
        check_estimate(x0, self.shape)
        z = x0.to(self.mask.dtype) / 2 + 0.5
        return self.solve(z, rho_column(rho, z.shape[0], z)) * 2 - 1


class CanvasConvolution(Operator):
    """y = M ⊙ D_sf(k ⊛ x) with x on the canvas of one measurement size: the operator samplers run on for a
    non-circular boundary (``Operator.on_canvas``). Its images are canvases, its measurements frames."""

    def __init__(
        self,
        kernel: Tensor,
        canvas: Canvas,
        init: Callable[[Tensor], Tensor],
        init_is_noisy_measurement: bool,
        tolerance: float = CG_TOLERANCE,
        iterations: int = CG_ITERATIONS,
    ) -> None:
        self.kernel, self.canvas, self._init = kernel, canvas, init
        self.init_is_noisy_measurement = init_is_noisy_measurement
        self.tolerance, self.iterations = tolerance, iterations

    @property
    def batch_size(self) -> int | None:
        return None if self.kernel.shape[0] == 1 else self.kernel.shape[0]

    def _kernel_like(self, ref: Tensor) -> Tensor:
        check_batch(self.batch_size, ref.shape[0], "kernel")
        return self.kernel.to(device=ref.device, dtype=ref.dtype).unsqueeze(1)

    def _check_measurement(self, y: Tensor) -> None:
        check_images(y, "y")
        if tuple(y.shape[-2:]) != (self.canvas.rows, self.canvas.cols):
            raise ValueError(
                f"this canvas operator was made for {self.canvas.rows}x{self.canvas.cols} measurements, got "
                f"{y.shape[-2]}x{y.shape[-1]}; call on_canvas() with this measurement"
            )

    def A(self, x: Tensor) -> Tensor:
        check_images(x, "x")
        otf = kernel_otf(self._kernel_like(x), self.canvas.height, self.canvas.width)
        return self.canvas.window(_circular(x, otf)[..., :: self.canvas.sf, :: self.canvas.sf])

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check_measurement(y)
        otf = kernel_otf(self._kernel_like(y), self.canvas.height, self.canvas.width)
        return _circular(zero_upsample(self.canvas.embed(y), self.canvas.sf), torch.conj(otf))

    def prepare(self, y: Tensor) -> DataTerm:
        self._check_measurement(y)
        return WindowDataTerm(y, self._kernel_like(y), self.canvas, self.tolerance, self.iterations)

    def init_image(self, y: Tensor) -> Tensor:
        """The frame operator's initial estimate, continued symmetrically over the canvas."""
        self._check_measurement(y)
        return self.canvas.extend(self._init(y))

    def on_canvas(self, y: Tensor, multiple: int = 1) -> Operator:
        self._check_measurement(y)
        return self

    def crop(self, x: Tensor) -> Tensor:
        return self.canvas.crop(x)

    def svd(self, y: Tensor) -> OperatorSVD:
        raise NoSVDError(no_svd_message("reflect"))


def no_svd_message(boundary: str) -> str:
    """Why a non-circular boundary has no SVD, and what to do."""
    return (
        f"a blur with boundary {boundary!r} has no singular value decomposition (its window breaks the FFT "
        f"diagonalisation): only boundary 'circular' has one (boundaries: {', '.join(BOUNDARIES)})"
    )


class ReflectConvolution:
    """The frame-sized forward model of ``boundary="reflect"``: D_sf of the same-size convolution of the
    half-sample-symmetric extension (SciPy ``mode='reflect'``), and its adjoint; ``on_canvas`` gives the
    operator the samplers solve with."""

    def __init__(self, kernel: Tensor, sf: int) -> None:
        self.kernel, self.sf = kernel, sf

    def _pads(self) -> tuple[int, int, int, int]:
        kh, kw = self.kernel.shape[-2:]
        return kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2

    def _otf(self, ref: Tensor, height: int, width: int) -> Tensor:
        batch = None if self.kernel.shape[0] == 1 else self.kernel.shape[0]
        check_batch(batch, ref.shape[0], "kernel")
        kernel = self.kernel.to(device=ref.device, dtype=ref.dtype).unsqueeze(1)
        return kernel_otf(kernel, height, width)

    def A(self, x: Tensor) -> Tensor:
        top, bottom, left, right = self._pads()
        height, width = x.shape[-2:]
        extended = symmetric_extend(x, top, bottom, left, right)
        blurred = _circular(extended, self._otf(x, *extended.shape[-2:]))
        return blurred[..., top : top + height : self.sf, left : left + width : self.sf]

    def A_adjoint(self, y: Tensor) -> Tensor:
        top, bottom, left, right = self._pads()
        height, width = y.shape[-2] * self.sf, y.shape[-1] * self.sf
        full = y.new_zeros(*y.shape[:-2], height + top + bottom, width + left + right)
        full[..., top : top + height : self.sf, left : left + width : self.sf] = y
        return _fold(_circular(full, torch.conj(self._otf(y, *full.shape[-2:]))), height, width, top, left)

    def on_canvas(
        self, y: Tensor, multiple: int, init: Callable[[Tensor], Tensor], noisy_init: bool
    ) -> CanvasConvolution:
        """The canvas operator of measurement ``y`` (sides multiples of ``multiple`` and sf)."""
        canvas = Canvas.around(y.shape[-2], y.shape[-1], tuple(self.kernel.shape[-2:]), self.sf, multiple)
        return CanvasConvolution(self.kernel, canvas, init, noisy_init)
