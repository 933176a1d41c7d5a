"""DPS (Chung, Kim, Mccann, Klasky & Ye, "Diffusion Posterior Sampling for General Noisy Inverse
Problems", ICLR 2023) as its official code computes it (``DPS2022/diffusion-posterior-sampling``:
``guided_diffusion/gaussian_diffusion.py::p_sample_loop`` with the ``ps`` conditioning of
``condition_methods.py``).

Each step t → t−1 is the DDPM ancestral step with the network's learned variance, followed by a
gradient step on the measurement distance through the network:
x_{t−1} = μ(x_t, x̂0) + σ_t·n − ζ·∇_{x_t} ‖y − A(x̂0(x_t))‖, with x̂0 = clamp((x_t − √(1−ᾱ_t)ε̂)/√ᾱ_t)
and no noise at the last step. The norm is on the [−1, 1] scale of DPS: our operators act on [0, 1]
images, and for a linear A the [−1, 1] residual is exactly 2·(y − A(x̂0/2 + ½)), which is what is
differentiated. Each image's norm is its own (the official code takes one norm over the batch,
which couples images; it runs one image at a time, where both agree).

Noise-scale convention: DPS's ``sigma`` adds noise to the [−1, 1] measurement, so its configs'
``sigma: 0.05`` is σ = 0.025 on our [0, 1] scale (and our 0.05 is its 0.1). The update itself never
uses σ; only the step size ζ was tuned at DPS's noise level (docs/methods.md §DPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffpir_core.models import X0Predictor
from diffpir_core.models.betas import NUM_TRAIN_TIMESTEPS, linear_betas
from diffpir_core.operators import Operator
from diffpir_core.sampling.common import (
    GeneratorArg,
    NoiseSource,
    Step,
    StepCallback,
    as_image_batch,
    as_predictor,
    canvas_operator,
    check_image_size,
    timestep_batch,
)

VarianceType = Literal["learned_range", "fixed_large", "fixed_small"]


class DPSConfig(BaseModel):
    """Hyper-parameters of :func:`dps_sample`, defaults from the official code.

    ``scale`` ζ = 0.3: ``conditioning.params.scale`` of the official SR and deblurring configs
    (0.5 for inpainting: the task kinds' ``PRESETS["dps"]``). ``num_steps`` = 1000: ``diffusion_config.yaml``'s
    ``steps``/``timestep_respacing``; fewer steps respace the schedule as guided-diffusion's
    ``space_timesteps`` does. ``variance`` = ``learned_range``: ``model_var_type`` (the network's
    variance channels interpolate between β̃_t and β_t); ``fixed_large``/``fixed_small`` serve UNets
    without variance channels.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(0.3, gt=0, description="ζ: step size on ∇‖y − A(x̂0)‖ (DPS's [−1, 1] norm)")
    num_steps: int = Field(1000, ge=1, le=NUM_TRAIN_TIMESTEPS, description="ancestral steps (respaced below 1000)")
    variance: VarianceType = Field("learned_range", description="per-step noise variance (guided-diffusion names)")

    @property
    def nfes(self) -> int:
        """Network forward evaluations per image (each one is also differentiated:
        ``METHODS["dps"].backward_passes``)."""
        return self.num_steps


def respaced_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """guided-diffusion's ``space_timesteps(T, [num_steps])``: ``round`` (half to even) of an evenly
    strided grid from 0 to T−1, increasing."""
    stride = 1 if num_steps <= 1 else (num_train_timesteps - 1) / (num_steps - 1)
    return sorted({round(k * stride) for k in range(num_steps)})


@dataclass(frozen=True)
class _Tables:
    """Float64 tables of the respaced DDPM (guided-diffusion's ``SpacedDiffusion``), cast to float32 at use."""

    timesteps: list[int]
    coef_x0: np.ndarray
    coef_xt: np.ndarray
    log_variance_min: np.ndarray
    log_variance_max: np.ndarray

    @classmethod
    def build(cls, num_steps: int, variance: VarianceType) -> _Tables:
        timesteps = respaced_timesteps(num_steps)
        base = np.cumprod(1.0 - linear_betas())
        kept = base[timesteps]
        betas = 1.0 - kept / np.append(1.0, kept[:-1])
        abar = np.cumprod(1.0 - betas)
        abar_prev = np.append(1.0, abar[:-1])
        posterior = betas * (1.0 - abar_prev) / (1.0 - abar)
        clipped = np.log(np.append(posterior[1], posterior[1:])) if len(betas) > 1 else np.log(betas)
        large = np.log(np.append(posterior[1], betas[1:])) if len(betas) > 1 else np.log(betas)
        with np.errstate(divide="ignore"):
            small = np.log(posterior)
        lo = {"learned_range": clipped, "fixed_large": large, "fixed_small": small}[variance]
        hi = np.log(betas) if variance == "learned_range" else lo
        coef_x0 = betas * np.sqrt(abar_prev) / (1.0 - abar)
        coef_xt = (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)
        return cls(timesteps, coef_x0, coef_xt, lo, hi)

    def at(self, table: np.ndarray, k: int, like: torch.Tensor) -> torch.Tensor:
        """Entry k as a float32 scalar tensor on ``like``'s device (the official ``extract_and_expand``)."""
        return torch.tensor(float(table[k]), dtype=torch.float32, device=like.device)

    def log_variance(
        self, k: int, var_values: torch.Tensor | None, variance: VarianceType, like: torch.Tensor
    ) -> torch.Tensor:
        """The step's log-variance: learned_range interpolates log β̃_t … log β_t with (v + 1)/2."""
        lo, hi = self.at(self.log_variance_min, k, like), self.at(self.log_variance_max, k, like)
        if variance != "learned_range":
            return lo.expand_as(like)
        if var_values is None:
            raise ValueError(
                "variance='learned_range' needs a UNet with variance channels (learn_sigma=True, 6 outputs); "
                "use variance='fixed_large' for a 3-channel UNet"
            )
        frac = (var_values + 1.0) / 2.0
        return frac * hi + (1 - frac) * lo


def dps_sample(
    model: nn.Module,
    operator: Operator,
    y: torch.Tensor,
    config: DPSConfig,
    *,
    x_T: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Restore the batch ``y`` (B, 3, h, w) in [0, 1] with DPS; returns (B, 3, H, W), unclamped.

    ``model`` is the ε-predicting UNet (or an ``X0Predictor``) in eval mode on y's device; with
    ``variance="learned_range"`` it must output the variance channels (``learn_sigma``). ``x_T``
    (diffusion space) replaces the N(0, I) start; ``generator`` as in ``diffpir_sample``.
    ``callback`` gets ``Step(i, t, x_{t−1}, x̂0, x̂0)`` after each step. Needs autograd through the network: memory
    is that of a training step at this batch size.
    """
    y = as_image_batch(y)
    predictor = as_predictor(model)
    batch, device = y.shape[0], y.device
    noise = NoiseSource(generator, batch, device)
    tables = _Tables.build(config.num_steps, config.variance)
    operator = canvas_operator(operator, predictor.unet, y)
    shape = operator.init_image(y).shape
    check_image_size(predictor.unet, shape[-2], shape[-1])
    if x_T is None:
        x = noise.draw(shape)
    elif isinstance(x_T, torch.Tensor) and x_T.shape == shape:
        x = x_T.float().to(device)
    else:
        got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise ValueError(f"x_T must have the shape of the restored batch {tuple(shape)} (diffusion space), got {got}")

    for i, k in enumerate(reversed(range(len(tables.timesteps)))):
        x, x0 = _step(predictor, operator, y, x, k, tables, config, noise)
        if callback is not None:
            callback(Step(i, tables.timesteps[k], x, x0, x0))
    return operator.crop(x / 2 + 0.5)


def _step(
    predictor: X0Predictor,
    operator: Operator,
    y: torch.Tensor,
    x: torch.Tensor,
    k: int,
    tables: _Tables,
    config: DPSConfig,
    noise: NoiseSource,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from x_t at respaced index k: (x_{t−1}, x̂0); draws the step's noise unless k = 0."""
    x0, var_values, _, grad = measurement_gradient(predictor, operator, y, x, tables.timesteps[k])
    with torch.no_grad():
        x = tables.at(tables.coef_x0, k, x) * x0 + tables.at(tables.coef_xt, k, x) * x
        if k > 0:
            x = x + torch.exp(0.5 * tables.log_variance(k, var_values, config.variance, x0)) * noise.draw(x.shape)
        return x - config.scale * grad, x0


def measurement_gradient(
    predictor: X0Predictor, operator: Operator, y: torch.Tensor, x: torch.Tensor, t: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """x̂0(x_t), the network's variance channels, the distance ‖y − A(x̂0)‖ per image on DPS's [−1, 1]
    scale (= 2‖y − A(x̂0/2 + ½)‖ on ours) and its gradient with respect to x_t, from one forward and
    one backward pass; all but the gradient detached."""
    x = x.detach().contiguous().requires_grad_(True)
    with torch.enable_grad():
        x0, var_values = predictor.predict(x, timestep_batch(t, x))
        residual = 2 * (y - operator.A(x0 / 2 + 0.5))
        distance = torch.linalg.vector_norm(residual.flatten(1), dim=1)
        (grad,) = torch.autograd.grad(distance.sum(), x)
    detached = None if var_values is None else var_values.detach()
    return x0.detach(), detached, distance.detach(), grad
