"""DDRM (Kawar, Elad, Ermon & Song, "Denoising Diffusion Restoration Models", NeurIPS 2022) as its
official code computes it (``bahjat-kawar/ddrm``, ``functions/denoising.py::efficient_generalized_steps``).

In the operator's SVD A = U·diag(s)·Vᴴ (``Operator.svd``), with ȳ = Uᴴy, x̄ = Vᴴx and the VE noise level
σ_t = √(1−ᾱ_t)/√ᾱ_t, each step t → t' takes x̄0 = Vᴴx0(x_t) and, per coordinate:

* s = 0 (and A's null space): x̄' = x̄0 + √(1−η²)·σ_t'·Vᴴε̂ + η·σ_t'·n;
* s·σ_t' < σ_y ("less noisy than y"): x̄' = x̄0 + √(1−η²)·σ_t'·(ȳ − s·x̄0)/σ_y + η·σ_t'·n;
* s·σ_t' > σ_y ("noisier than y"): x̄' = η_b·ȳ/s + (1−η_b)·x̄0 + √(σ_t'² − η_b²σ_y²/s²)·n;

then x_t' = √ᾱ_t'·V·x̄'. x_T is drawn from p(x_T | y) the same way (docs/methods.md §DDRM). Diffusion
space throughout: ȳ is the SVD of the measurement of the [−1, 1] image, 2y − A(1), and σ_y = 2σ
(the official code doubles its ``--sigma_0`` too). The result is the last x̂0, unclamped.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffpir_core.models import X0Predictor
from diffpir_core.models.betas import NUM_TRAIN_TIMESTEPS, linear_betas
from diffpir_core.operators import NoSVDError, Operator, OperatorSVD
from diffpir_core.sampling.common import (
    GeneratorArg,
    NoiseSource,
    Step,
    StepCallback,
    as_image_batch,
    as_predictor,
    check_image_size,
    timestep_batch,
)
from diffpir_core.sampling.config import NoiseSigma, per_image_sigmas


class DDRMConfig(BaseModel):
    """Hyper-parameters of :func:`ddrm_sample`, defaults from the official code.

    ``timesteps`` = 20: the paper's and the README's runs (``--timesteps 20``); the visited steps are
    ``range(0, 1000, 1000 // timesteps)`` as in ``runners/diffusion.py::sample_image``. ``eta`` = 0.85 and
    ``eta_b`` = 1.0: ``main.py``'s ``--eta``/``--etaB`` defaults (η serves both the s = 0 and the
    "less noisy" cases, as ``sample_image`` passes ``etaA = etaC = eta``). ``singular_threshold`` = 3e-2:
    the ``ZERO`` below which ``svd_replacement.py``'s convolution operators zero a singular value
    (they apply it to the 1-D factors of a separable kernel; ours apply it to s itself).
    ``noise_sigma``: the measurement's AWGN std on the [0, 1] scale, as the official ``--sigma_0``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timesteps: int = Field(20, ge=1, le=NUM_TRAIN_TIMESTEPS, description="requested steps (stride 1000 // timesteps)")
    eta: float = Field(0.85, ge=0, le=1, description="η: fresh-noise share where s = 0 or s·σ_t < σ_y")
    eta_b: float = Field(1.0, ge=0, le=1, description="η_b: weight of ȳ/s where s·σ_t > σ_y")
    singular_threshold: float = Field(3e-2, ge=0, description="singular values below this count as 0")
    noise_sigma: NoiseSigma = Field(0.0, description="AWGN std on [0,1], scalar or per image")

    def timestep_sequence(self) -> list[int]:
        """The visited timesteps in increasing order (the official ``seq``)."""
        return list(range(0, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS // self.timesteps))

    @property
    def nfes(self) -> int:
        """Network evaluations per image: one per visited timestep."""
        return len(self.timestep_sequence())

    def noise_sigmas(self, batch: int) -> list[float]:
        """σ per image for a batch of ``batch`` images (a scalar is shared)."""
        return per_image_sigmas(self.noise_sigma, batch)


def require_svd(operator: Operator, method: str) -> None:
    """Refuse, before any image runs, an operator without the SVD that ``method`` needs."""
    if not operator.has_svd:
        raise NoSVDError(
            f"{method} needs the operator's singular value decomposition, which {type(operator).__name__} "
            "does not have (only inpainting, and blur or SR in blur mode with boundary 'circular' do; boundaries: "
            "circular, reflect, the job's task.boundary); use another method (diffpir, dps, dpir) for this task"
        )


def ddrm_sample(
    model: nn.Module,
    operator: Operator,
    y: torch.Tensor,
    config: DDRMConfig,
    *,
    generator: GeneratorArg = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Restore the batch ``y`` (B, 3, h, w) in [0, 1] with DDRM; returns (B, 3, H, W), unclamped.

    ``model`` is the ε-predicting UNet (or an ``X0Predictor``) in eval mode on y's device; ``operator``
    must have an SVD (``operator.has_svd``). ``generator``: one ``torch.Generator`` per image
    (batch-invariant results), a single one, or None (global RNG); each step draws one image-space
    N(0, I) per image and uses its SVD coordinates (the official code draws i.i.d. coordinates, which
    is the same distribution). ``callback`` gets ``Step(i, t, x_t', x̂0, x̂0)`` after each step.
    """
    require_svd(operator, "DDRM")
    y = as_image_batch(y)
    predictor = as_predictor(model)
    batch, device = y.shape[0], y.device
    noise = NoiseSource(generator, batch, device)
    abar = official_alphas_cumprod().to(device)
    sigma_y = 2 * torch.tensor(config.noise_sigmas(batch), device=device).reshape(-1, 1, 1, 1)
    seq = config.timestep_sequence()

    with torch.no_grad():
        shape = operator.init_image(y).shape
        check_image_size(predictor.unet, shape[-2], shape[-1])
        terms = _Terms.build(operator, y, shape, sigma_y, config.singular_threshold)
        x = terms.initial_state(_ve_sigma(abar[seq[-1]]), noise.draw(shape))
        for i, (t, t_next) in enumerate(zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True)):
            x, x0 = _step(predictor, terms, x, t, t_next, abar, config, noise.draw(shape))
            if callback is not None:
                callback(Step(i, t, x, x0, x0))
    return x / 2 + 0.5


def _step(
    predictor: X0Predictor,
    terms: _Terms,
    x: torch.Tensor,
    t: int,
    t_next: int,
    abar: torch.Tensor,
    config: DDRMConfig,
    n: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step x_t → x_t' (t' = −1: the end, ᾱ = 1) with the step's image-space noise ``n``: (x_t', x̂0)."""
    a = abar[t]
    a_next = abar[t_next] if t_next >= 0 else torch.ones((), device=x.device)
    eps = predictor.epsilon(x.contiguous(), timestep_batch(t, x))
    x0 = (x - eps * (1 - a).sqrt()) / a.sqrt()
    return a_next.sqrt() * terms.step(x0, eps, _ve_sigma(a_next), config, n), x0


def official_alphas_cumprod() -> torch.Tensor:
    """ᾱ_t as DDRM computes it (``compute_alpha``): ``torch.cumprod`` of fl32(1 − fl32(β_t)), float32.
    Not the DiffPIR tables' NumPy product, which differs in 85% of the entries by up to 7e-7 relative."""
    betas = torch.from_numpy(linear_betas()).float()
    return (1 - betas).cumprod(dim=0)


def _ve_sigma(abar: torch.Tensor) -> torch.Tensor:
    """σ = √(1−ᾱ)/√ᾱ, float32 as the official ``(1 - at).sqrt() / at.sqrt()``."""
    return (1 - abar).sqrt() / abar.sqrt()


class _Terms:
    """The measurement in SVD coordinates and the three per-coordinate cases of the update."""

    def __init__(self, svd: OperatorSVD, s: torch.Tensor, y_bar: torch.Tensor, sigma_y: torch.Tensor) -> None:
        self.svd = svd
        self.s = s
        self.seen = s > 0
        self.s_safe = torch.where(self.seen, s, torch.ones_like(s))
        self.y_bar = y_bar
        self.sigma_y = sigma_y
        self.sigma_y_safe = torch.where(sigma_y > 0, sigma_y, torch.ones_like(sigma_y))

    @classmethod
    def build(
        cls, operator: Operator, y: torch.Tensor, shape: torch.Size, sigma_y: torch.Tensor, threshold: float
    ) -> _Terms:
        """The terms of measurement ``y`` (restored ``shape``), singular values below ``threshold`` zeroed."""
        svd = operator.svd(y)
        s = torch.where(svd.singulars >= threshold, svd.singulars, torch.zeros_like(svd.singulars))
        y_bar = svd.Ut(2 * y - operator.A(torch.ones(shape, device=y.device)))
        return cls(svd, s, y_bar, sigma_y)

    def _image(self, coords: torch.Tensor, null_part: torch.Tensor) -> torch.Tensor:
        out = self.svd.V(coords) + null_part
        return (out.real if out.is_complex() else out).float()

    def initial_state(self, sigma_T: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """x_T = V·x̄_T / σ_T with x̄_T = ȳ/s + √(σ_T² − σ_y²/s²)·n where s·σ_T > σ_y, σ_T·n elsewhere
        (the official code divides by σ_T where √ᾱ_T is meant: a factor √(1−ᾱ_T) ≈ 1 − 2e-5, kept)."""
        large = self.s * sigma_T > self.sigma_y
        inv = torch.where(large, self.sigma_y / self.s_safe, torch.zeros_like(self.s_safe))
        remaining = (sigma_T**2 - inv**2).clamp_min(0).sqrt()
        coords = torch.where(large, self.y_bar / self.s_safe, torch.zeros_like(self.y_bar)) + remaining * self.svd.Vt(
            n
        )
        return self._image(coords, sigma_T * self.svd.null(n)) / sigma_T

    def step(
        self, x0: torch.Tensor, eps: torch.Tensor, sigma_next: torch.Tensor, config: DDRMConfig, n: torch.Tensor
    ) -> torch.Tensor:
        """V·x̄' for the VE state at σ_t' (module docstring), before the √ᾱ_t' scaling."""
        std = sigma_next * config.eta
        tilde = (sigma_next**2 - std**2).sqrt()
        z0, z_eps, z_n = self.svd.Vt(x0), self.svd.Vt(eps), self.svd.Vt(n)
        missing = z0 + tilde * z_eps + std * z_n
        less_noisy = z0 + tilde * (self.y_bar - self.s * z0) / self.sigma_y_safe + std * z_n
        b = config.eta_b
        std_b = (sigma_next**2 - (self.sigma_y * b / self.s_safe) ** 2).clamp_min(0).sqrt()
        noisier = b * self.y_bar / self.s_safe + (1 - b) * z0 + std_b * z_n
        before = self.s * sigma_next > self.sigma_y
        after = self.seen & (self.s * sigma_next < self.sigma_y)
        coords = torch.where(before, noisier, torch.where(after, less_noisy, missing))
        return self._image(coords, self.svd.null(x0 + tilde * eps + std * n))
