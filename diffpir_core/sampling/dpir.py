"""DPIR (Zhang, Li, Zuo, Zhang, Van Gool & Timofte, "Plug-and-Play Image Restoration with Deep Denoiser
Prior", TPAMI 2021) as its official code computes it (``cszn/DPIR``: ``main_dpir_deblur.py``,
``main_dpir_sisr.py``, ``utils/utils_pnp.py``), with the diffusion network as the Gaussian denoiser.

Half-quadratic splitting from the operator's initial estimate z_0, for k = 1 … N:
x_k = argmin ‖y − A(x)‖² + ρ_k‖x − z_{k−1}‖² (the operator's closed-form ``prox``, the same data step
as DiffPIR), then z_k = D(x_k; σ_k). The σ_k are log-spaced from σ_1 = 49/255 to σ_N = max(floor, σ)
and ρ_k = 0.23·max(0.255/255, σ)²/σ_k² (``get_rho_sigma``). The denoiser D(·; σ) is the diffusion
network at the timestep t whose noise level σ̄_t = √(1−ᾱ_t)/√ᾱ_t is nearest to 2σ (σ on [0, 1] is 2σ
on [−1, 1]): x̃0(√ᾱ_t·(2x − 1), t)/2 + ½. With ``x8`` the denoiser sees the k-th of the 8 flips and
rotations (k mod 8) and its output is turned back, as the official code's "x8" per iteration.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffpir_core.models import X0Predictor
from diffpir_core.operators import DataTerm, Operator
from diffpir_core.sampling.common import (
    GeneratorArg,
    Step,
    StepCallback,
    as_image_batch,
    as_predictor,
    canvas_operator,
    check_generators,
    check_image_size,
)
from diffpir_core.sampling.config import NoiseSigma, per_image_sigmas
from diffpir_core.sampling.diffpir import reference_schedule

MIN_DATA_SIGMA = 0.255 / 255
"""The floor on σ in ρ_k: ``get_rho_sigma(sigma=max(0.255/255., noise_level_model), ...)``."""


class DPIRPnPConfig(BaseModel):
    """Hyper-parameters of :func:`dpir_pnp_sample`, defaults from ``main_dpir_deblur.py``.

    ``iter_num`` = 8 (``iter_num = 8``; SR 24: the task kinds' ``PRESETS["dpir"]``); ``sigma_start`` =
    49/255 (``modelSigma1 = 49``); the last σ is max(``sigma_end_floor``, σ): the deblurring script uses
    σ itself (it assumes σ > 0), SISR max(sf, 255σ)/255, so the default floor is the 0.255/255 the
    scripts put on the data-term σ; ``rho_weight`` = 0.23 (``get_rho_sigma``); ``x8`` = True.
    ``noise_sigma``: the measurement's AWGN std on the [0, 1] scale, as the official ``noise_level_img``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    iter_num: int = Field(8, ge=1, description="N: HQS iterations (one denoiser call each)")
    sigma_start: float = Field(49 / 255, gt=0, lt=1, description="σ_1 on [0,1] (modelSigma1/255)")
    sigma_end_floor: float = Field(MIN_DATA_SIGMA, gt=0, lt=1, description="σ_N = max(floor, noise_sigma)")
    rho_weight: float = Field(0.23, gt=0, description="ρ_k = weight·σ²/σ_k²")
    x8: bool = Field(True, description="cycle the 8 flips/rotations over the iterations")
    noise_sigma: NoiseSigma = Field(0.0, description="AWGN std on [0,1], scalar or per image")

    @property
    def nfes(self) -> int:
        """Network evaluations per image: one denoiser call per iteration."""
        return self.iter_num

    def noise_sigmas(self, batch: int) -> list[float]:
        """σ per image for a batch of ``batch`` images (a scalar is shared)."""
        return per_image_sigmas(self.noise_sigma, batch)

    def schedule(self, noise_sigma: float) -> tuple[list[float], list[float]]:
        """(σ_k, ρ_k) for one image of measurement noise ``noise_sigma``, as ``get_rho_sigma`` (w = 1)."""
        sigma_end = max(self.sigma_end_floor, noise_sigma)
        sigmas = np.logspace(np.log10(self.sigma_start * 255), np.log10(sigma_end * 255), self.iter_num)
        sigmas = sigmas.astype(np.float32) / 255.0
        data_sigma = max(MIN_DATA_SIGMA, noise_sigma)
        rhos = [self.rho_weight * data_sigma**2 / float(s) ** 2 for s in sigmas]
        return [float(s) for s in sigmas], rhos


def augment(x: torch.Tensor, mode: int) -> torch.Tensor:
    """The 8 flips/rotations of DPIR's ``augment_img_tensor4`` (mode 0 = identity)."""
    ops: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
        0: lambda v: v,
        1: lambda v: v.rot90(1, [2, 3]).flip([2]),
        2: lambda v: v.flip([2]),
        3: lambda v: v.rot90(3, [2, 3]),
        4: lambda v: v.rot90(2, [2, 3]).flip([2]),
        5: lambda v: v.rot90(1, [2, 3]),
        6: lambda v: v.rot90(2, [2, 3]),
        7: lambda v: v.rot90(3, [2, 3]).flip([2]),
    }
    return ops[mode](x)


def deaugment(x: torch.Tensor, mode: int) -> torch.Tensor:
    """The inverse of :func:`augment` (modes 3 and 5 undo each other, the others themselves)."""
    return augment(x, {3: 5, 5: 3}.get(mode, mode))


def dpir_pnp_sample(
    model: nn.Module,
    operator: Operator,
    y: torch.Tensor,
    config: DPIRPnPConfig,
    *,
    generator: GeneratorArg = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Restore the batch ``y`` (B, 3, h, w) in [0, 1] with DPIR; returns (B, 3, H, W) in [0, 1].

    ``model`` is the ε-predicting UNet (or an ``X0Predictor``) in eval mode on y's device. DPIR is
    deterministic: ``generator`` is accepted for the samplers' common signature (checked, not used).
    ``callback`` gets ``Step(k, t, z_k, z_k, x_k)`` (diffusion space) after each iteration, t being image 0's
    denoiser timestep (per-image noise levels give per-image timesteps).
    """
    y = as_image_batch(y)
    predictor = as_predictor(model)
    batch, device = y.shape[0], y.device
    check_generators(generator, batch)
    schedule = reference_schedule().to(device)
    per_image = [config.schedule(s) for s in config.noise_sigmas(batch)]
    timesteps = torch.tensor(
        [[schedule.nearest_timestep(2 * s) for s in sigmas] for sigmas, _ in per_image], device=device
    )
    rhos = torch.tensor([r for _, r in per_image], dtype=torch.float32, device=device)

    operator = canvas_operator(operator, predictor.unet, y)
    with torch.no_grad():
        z = operator.init_image(y)
        check_image_size(predictor.unet, z.shape[-2], z.shape[-1])
        data = operator.prepare(y)
        for k in range(config.iter_num):
            t = timesteps[:, k]
            z, x0, x_pm = _iteration(
                predictor, data, z, rhos[:, k], t, schedule.sqrt_alphas_cumprod[t], k % 8 if config.x8 else 0
            )
            if callback is not None:
                callback(Step(k, int(t[0]), x0, x0, x_pm))
    return operator.crop(z)


def _iteration(
    predictor: X0Predictor,
    data: DataTerm,
    z: torch.Tensor,
    rho: torch.Tensor,
    t: torch.Tensor,
    sqrt_abar: torch.Tensor,
    mode: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One HQS iteration from z_{k−1} ([0, 1]): the data step, then the denoiser at timesteps ``t`` (√ᾱ_t
    ``sqrt_abar``) on flip/rotation ``mode``; returns (z_k, its diffusion-space x̃0, the data step's x_k)."""
    x_pm = data.prox(2 * z - 1, rho)
    x0 = deaugment(predictor(augment(sqrt_abar[:, None, None, None] * x_pm, mode).contiguous(), t), mode)
    return x0 / 2 + 0.5, x0, x_pm
