"""The DiffPIR reference's per-image loop (yuanzhi-zhu/DiffPIR ``main_ddpir_deblur.py`` with guided-diffusion's
``p_sample``), transcribed as the baseline of ``bench/sampler.py``.

It does the reference's per-step work, one image at a time: the timestep search over ᾱ (``find_nearest``), the
network call through ``p_mean_variance`` (learned variance, posterior mean, the schedule arrays converted to
tensors at every use as ``_extract_into_tensor`` does) and its ancestral sample (drawn, then unused), the
closed-form data step, then the update with two ``randn_like`` draws; its state inherits channels-last from
the HWC image, so every draw is PyTorch's scalar sampler. Benchmark code only: the sampler is the reference for
numbers, this loop for speed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffpir_core.operators import Operator
from diffpir_core.sampling import DiffPIRConfig
from diffpir_core.sampling.schedule import rho_weight, visited_timesteps


class _GuidedDiffusionArrays:
    """The float64 numpy arrays of guided-diffusion's ``GaussianDiffusion`` for the linear schedule."""

    def __init__(self) -> None:
        self.betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
        alphas_cumprod = np.cumprod(1.0 - self.betas)
        prev = np.append(1.0, alphas_cumprod[:-1])
        self.sqrt_recip = np.sqrt(1.0 / alphas_cumprod)
        self.sqrt_recipm1 = np.sqrt(1.0 / alphas_cumprod - 1)
        variance = self.betas * (1.0 - prev) / (1.0 - alphas_cumprod)
        self.log_variance_clipped = np.log(np.append(variance[1], variance[1:]))
        self.mean_coef1 = self.betas * np.sqrt(prev) / (1.0 - alphas_cumprod)
        self.mean_coef2 = (1.0 - prev) * np.sqrt(1.0 - self.betas) / (1.0 - alphas_cumprod)
        self.sqrt_ac = torch.from_numpy(np.sqrt(alphas_cumprod)).float()
        self.sqrt_1m_ac = torch.from_numpy(np.sqrt(1.0 - alphas_cumprod)).float()
        self.reduced_alpha_cumprod = np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)

    def find_nearest(self, value: float) -> int:
        return int(np.abs(self.reduced_alpha_cumprod - value).argmin())


def _extract(array: np.ndarray, t: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(array).to(t.device)[t].float()[:, None, None, None]


def _p_sample_x0(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, gd: _GuidedDiffusionArrays) -> torch.Tensor:
    """guided-diffusion ``p_sample`` (learned range variance, clipped x0); returns ``pred_xstart``."""
    out = unet(x, t)
    eps, var_values = out[:, :3], out[:, 3:]
    frac = (var_values + 1) / 2
    log_variance = frac * _extract(np.log(gd.betas), t) + (1 - frac) * _extract(gd.log_variance_clipped, t)
    x0 = (_extract(gd.sqrt_recip, t) * x - _extract(gd.sqrt_recipm1, t) * eps).clamp(-1, 1)
    mean = _extract(gd.mean_coef1, t) * x0 + _extract(gd.mean_coef2, t) * x
    nonzero = (t != 0).float()[:, None, None, None]
    _unused_sample = mean + nonzero * torch.exp(0.5 * log_variance) * torch.randn_like(x)
    return x0


def reference_loop(
    unet: nn.Module, operators: list[Operator], ys: torch.Tensor, config: DiffPIRConfig, seeds: list[int]
) -> torch.Tensor:
    """Restore ``ys`` one image at a time as the reference does (its RNG is the global one, seeded per image)."""
    gd = _GuidedDiffusionArrays()
    a, b = gd.sqrt_ac, gd.sqrt_1m_ac
    steps = visited_timesteps(config.iter_num, config.skip_type, config.t_start, 1000)
    outs = []
    for op, y, seed in zip(operators, ys, seeds, strict=True):
        torch.manual_seed(seed)
        y = y.permute(1, 2, 0).contiguous().permute(2, 0, 1)[None]  # single2tensor4: an HWC array, permuted
        sigma = config.noise_sigmas(1)
        rhos = rho_weight(config.lambda_, sigma)
        init = 2 * op.init_image(y) - 1
        x = a[config.t_start] * init + b[config.t_start] * torch.randn_like(init)
        data = op.prepare(y)
        with torch.no_grad():
            for i, t in enumerate(steps):
                t_vec = torch.tensor([gd.find_nearest(float(gd.reduced_alpha_cumprod[t]))])
                x0 = _p_sample_x0(unet, x, t_vec, gd)
                if i == len(steps) - 1:
                    break
                x0 = x0 + config.guidance_scale * (data.prox(x0, rhos * a[t] ** 2 / b[t] ** 2) - x0)
                t_next = gd.find_nearest(float(gd.reduced_alpha_cumprod[steps[i + 1]]))
                eps = (x - a[t] * x0) / b[t]
                eta_sigma = config.eta * b[t_next] / b[t] * torch.sqrt(torch.tensor(gd.betas[t]).float())
                x = (
                    a[t_next] * x0
                    + np.sqrt(1 - config.zeta)
                    * (torch.sqrt(b[t_next] ** 2 - eta_sigma**2) * eps + eta_sigma * torch.randn_like(x))
                    + np.sqrt(config.zeta) * b[t_next] * torch.randn_like(x)
                )
        outs.append(x / 2 + 0.5)
    return torch.cat(outs)
