"""The training objective of the demo prior: DDPM ε-prediction plus a learned variance (hybrid loss).

Ho et al. (2020) train ε̂(x_t, t) with L_simple = E‖ε − ε̂‖² on x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε. Nichol &
Dhariwal (improved DDPM, 2021) additionally learn the reverse variance Σ = exp(v log β_t + (1 − v) log β̃_t)
(v = (out + 1)/2 from the second half of the 6 output channels) through L_hybrid = L_simple + λ L_vlb,
λ = 0.001, with a stop-gradient on the mean so that L_vlb trains only the variance. L_vlb = Σ_t L_t is
estimated from the one sampled term as T · L_t, hence T · λ = 1 weights the per-term KL (in bits per
dimension) for T = 1000 — the same weighting guided-diffusion uses. DiffPIR only needs ε̂ (and discards
the variance), but training it keeps the checkpoint a complete guided-diffusion model.

The schedule here is float64 (β = linspace(1e-4, 0.02, 1000), ᾱ = cumprod), as in guided-diffusion's
network-side ``GaussianDiffusion``; the sampler's float32 tables agree to 7e-7 relative (docs/algorithm.md §2.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffpir_core.models.betas import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS

VLB_WEIGHT_PER_TERM = 1.0
"""λ · T with λ = 0.001 and T = 1000: the weight of the sampled L_t (bits/dim) in the hybrid loss."""


@dataclass(frozen=True)
class LossTerms:
    """Per-batch means: ``loss`` = ``mse`` + VLB_WEIGHT_PER_TERM · ``vlb`` (the tensor to back-propagate)."""

    loss: torch.Tensor
    mse: torch.Tensor
    vlb: torch.Tensor


class DiffusionObjective:
    """Linear-schedule DDPM with learned variance: forward noising and the hybrid training loss."""

    def __init__(
        self, num_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
    ) -> None:
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        self.num_timesteps = num_timesteps
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / alphas_cumprod - 1.0).sqrt()
        # β̃_0 = 0: use β̃_1 there, as improved DDPM does, so the log stays finite.
        self.log_posterior_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]]).log()
        self.log_betas = betas.log()
        self.posterior_mean_coef_x0 = betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)
        self.posterior_mean_coef_xt = (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod)

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """table[t] as float32 (B, 1, 1, 1) for broadcasting over images."""
        return table[t].float().view(-1, 1, 1, 1)

    def sample_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Uniform t ∈ {0, …, T−1}, int64 (B,)."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε."""
        return self._at(self.sqrt_alphas_cumprod, t) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def loss(
        self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> LossTerms:
        """Hybrid loss of a (B, 6, H, W) network output for the batch (x0, x_t, t, ε)."""
        eps, var_out = model_output.float().chunk(2, dim=1)
        mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
        vlb = self._vlb_terms(eps.detach(), var_out, x0, x_t, t)
        loss = mse + VLB_WEIGHT_PER_TERM * vlb
        return LossTerms(loss=loss.mean(), mse=mse.mean(), vlb=vlb.mean())

    def _vlb_terms(
        self, eps: torch.Tensor, var_out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """L_t in bits/dim: KL(q(x_{t−1}|x_t, x0) ‖ p(x_{t−1}|x_t)) for t > 0, the discretised
        decoder NLL of x0 for t = 0. ``eps`` is detached, so only the variance receives gradient."""
        x0_pred = (
            self._at(self.sqrt_recip_alphas_cumprod, t) * x_t - self._at(self.sqrt_recipm1_alphas_cumprod, t) * eps
        )
        mean_p = self._at(self.posterior_mean_coef_x0, t) * x0_pred + self._at(self.posterior_mean_coef_xt, t) * x_t
        mean_q = self._at(self.posterior_mean_coef_x0, t) * x0 + self._at(self.posterior_mean_coef_xt, t) * x_t
        frac = (var_out + 1.0) / 2.0
        log_var_q = self._at(self.log_posterior_variance, t)
        log_var_p = frac * self._at(self.log_betas, t) + (1.0 - frac) * log_var_q
        kl = 0.5 * (
            -1.0
            + log_var_p
            - log_var_q
            + torch.exp(log_var_q - log_var_p)
            + (mean_q - mean_p) ** 2 * torch.exp(-log_var_p)
        )
        kl = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean_p, 0.5 * log_var_p).mean(dim=(1, 2, 3)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per element for 8-bit data x ∈ [−1, 1] under N(mean, exp(log_scale)²) integrated over the
    pixel's bin of width 2/255; the outermost bins extend to ±∞."""
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + 1.0 / 255.0) * inv_std
    lower = (x - mean - 1.0 / 255.0) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    cdf_delta = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    middle = torch.log(cdf_delta.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, middle))
