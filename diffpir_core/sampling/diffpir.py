"""The DiffPIR sampler (Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration",
NTIRE 2023, Algorithm 1) as the reference implementation computes it (docs/algorithm.md §4).

Each visited step t → t': the network gives a clean estimate x̃0 (``X0Predictor``); the operator's
closed-form data step x_p = argmin ‖y − A(x)‖² + ρ_t‖x − x̃0‖² pulls it towards the measurement,
x̂0 = x̃0 + g·(x_p − x̃0); then, with ε̂' = (x_t − a_t·x̂0)/b_t,
x_t' = a_t'·x̂0 + √(1−ζ)·(√(b_t'² − σ_η²)·ε̂' + σ_η·n₁) + √ζ·b_t'·n₂. The float32 operation order
follows the reference so that its test vectors are reproduced bit for bit on PyTorch CPU; the sampler
never looks at which task it is solving.

The UNet always receives x in one memory layout, whatever the caller's tensors are: float32 convolutions
round differently by layout (and thread count). ``numerics="fast"`` (default) evaluates it channels-last
with SDPA attention, ``"reference"`` contiguous with the reference's einsum attention (bit for bit, §4.8).

Randomness comes only from the generators passed in. With one generator per image, every draw of an
image (x_T, one discarded draw per network call as the reference's unused ancestral sample, n₁ then n₂
per update) comes from its own generator, so its result does not depend on the rest of the batch.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from diffpir_core.models import X0Predictor
from diffpir_core.operators import DataTerm, Operator
from diffpir_core.sampling.common import (
    GeneratorArg,
    NoiseSource,
    Step,
    StepCallback,
    as_image_batch,
    as_predictor,
    canvas_operator,
    check_image_size,
    set_network_numerics,
    timestep_batch,
)
from diffpir_core.sampling.config import DiffPIRConfig
from diffpir_core.sampling.schedule import Schedule, rho_weight, visited_timesteps


@lru_cache(maxsize=1)
def reference_schedule() -> Schedule:
    """The linear 1000-step schedule every DiffPIR prior was trained with."""
    return Schedule.linear()


def _initial_state(
    operator: Operator,
    init: torch.Tensor,
    sigmas: list[float],
    schedule: Schedule,
    t_start: int,
    noise: NoiseSource,
) -> torch.Tensor:
    """x_T (docs/algorithm.md §4.2): SR a_s·P(x_up) + b_s·n; deblur/inpainting r·P(y) + √(b_s² − r²b_y²)·n with
    t_y the timestep whose σ̄ matches the measurement noise 2σ and r = a_s/a_{t_y}, per image."""
    a, b = schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod
    n = noise.draw(init.shape, reference_order=False)  # the reference vectors' x_T noise is a plain randn
    x_init = 2 * init - 1
    if not operator.init_is_noisy_measurement:
        return (a[t_start] * x_init + b[t_start] * n).contiguous()
    t_y = torch.tensor([schedule.nearest_timestep(2 * s) for s in sigmas], device=a.device)
    r = a[t_start] / a[t_y]
    std = torch.sqrt(b[t_start] ** 2 - r**2 * b[t_y] ** 2)
    return (r[:, None, None, None] * x_init + std[:, None, None, None] * n).contiguous()


def _checked_x_T(x_T: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if not isinstance(x_T, torch.Tensor) or x_T.shape != shape:
        got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise ValueError(f"x_T must have the shape of the restored batch {tuple(shape)} (diffusion space), got {got}")
    return x_T.float().contiguous()


def diffpir_sample(
    model: nn.Module,
    operator: Operator,
    y: torch.Tensor,
    config: DiffPIRConfig,
    *,
    x_T: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    callback: StepCallback | None = None,
    schedule: Schedule | None = None,
) -> torch.Tensor:
    """Restore the batch ``y`` (B, 3, h, w) in [0, 1] with DiffPIR; returns (B, 3, H, W), unclamped.

    With a non-circular boundary the state lives on the operator's canvas (``x_T`` and the callback's
    tensors are canvas-sized) and the result is cropped to the frame.
    ``model`` is the bare ε-predicting UNet (or an ``X0Predictor``), in eval mode, on y's device.
    ``operator`` gives the initial estimate and the data step; ``x_T`` (diffusion space) replaces the
    reference initialisation and its noise draw; ``generator`` is one ``torch.Generator`` per image (batch-invariant
    results), a single one, or None for PyTorch's global RNG. ``schedule`` defaults to the reference
    linear schedule (pass ``Schedule.from_tensors`` for bit-level checks on another platform). ``callback`` gets
    ``Step(i, t, x_t', x̃0, x̂0)`` after each visited step (x̂0 = x̃0 at the last one).
    """
    y = as_image_batch(y)
    predictor = as_predictor(model)
    batch, device = y.shape[0], y.device
    sigmas = config.noise_sigmas(batch)
    noise = NoiseSource(generator, batch, device, config.reference_noise)
    schedule = (schedule or reference_schedule()).to(device)
    steps = visited_timesteps(config.iter_num, config.skip_type, config.t_start, schedule.num_train_timesteps)
    weight = rho_weight(config.lambda_, sigmas).to(device)
    layout = set_network_numerics(predictor.unet, config.numerics)
    operator = canvas_operator(operator, predictor.unet, y)

    with torch.no_grad():
        init = operator.init_image(y)
        check_image_size(predictor.unet, init.shape[-2], init.shape[-1])
        if x_T is None:
            x = _initial_state(operator, init, sigmas, schedule, config.t_start, noise)
        else:
            x = _checked_x_T(x_T, init.shape).to(device)
        data_dtype = torch.float64 if config.data_step_dtype == "float64" else torch.float32
        data = operator.prepare(y.to(data_dtype))
        for i, t in enumerate(steps):
            x, x0, x0_hat = _step(predictor, layout, data, x, i, steps, weight, schedule, config, noise)
            if callback is not None:
                callback(Step(i, t, x, x0, x0_hat))
    out = x0_hat if config.return_mode == "x0_hat" else x
    return operator.crop(out / 2 + 0.5)


def _step(
    predictor: X0Predictor,
    layout: torch.memory_format,
    data: DataTerm,
    x: torch.Tensor,
    i: int,
    steps: list[int],
    weight: torch.Tensor,
    schedule: Schedule,
    config: DiffPIRConfig,
    noise: NoiseSource,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One visited step (docs/algorithm.md §4.3); the last step only evaluates the network."""
    t = steps[i]
    t_vec = timestep_batch(t, x)
    last = i == len(steps) - 1
    repeats = 1 if last else config.iter_num_U
    for u in range(repeats):
        x0 = predictor(x.contiguous(memory_format=layout), t_vec).contiguous()  # convolutions round by layout
        if config.reference_noise:
            noise.skip(x.shape)  # the reference's unused ancestral sample: keeps the RNG stream aligned
        if last:
            return x, x0, x0
        x0_hat = _data_step(data, x0, schedule.rho(t, weight), config)
        x = _update(x, x0_hat, t, steps[i + 1], schedule, config, noise)
        if u < repeats - 1:
            x = _renoise(x, t, steps[i + 1], schedule, noise)
    return x, x0, x0_hat


def _data_step(data: DataTerm, x0: torch.Tensor, rho: torch.Tensor, config: DiffPIRConfig) -> torch.Tensor:
    """x̂0 = x̃0 + g·(x_p − x̃0), evaluated literally even for g = 1 (it moves results by ulps,
    docs/algorithm.md §5.1)."""
    if config.data_step_dtype == "float64":
        x_p = data.prox(x0.double(), rho.double()).float()
    else:
        x_p = data.prox(x0, rho)
    return x0 + config.guidance_scale * (x_p - x0)


def _update(
    x: torch.Tensor,
    x0_hat: torch.Tensor,
    t: int,
    t_next: int,
    schedule: Schedule,
    config: DiffPIRConfig,
    noise: NoiseSource,
) -> torch.Tensor:
    """x_t' = a_t'·x̂0 + √(1−ζ)·(√(b_t'² − σ_η²)·ε̂' + σ_η·n₁) + √ζ·b_t'·n₂ (docs/algorithm.md §4.4).

    n₁ then n₂ are always drawn (even when ζ or η makes them irrelevant) to keep the RNG stream aligned.
    """
    a, b = schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod
    eps = (x - a[t] * x0_hat) / b[t]
    sigma_eta = config.eta * b[t_next] / b[t] * torch.sqrt(schedule.betas[t])
    n1 = noise.draw(x.shape)
    n2 = noise.draw(x.shape)
    zeta = config.zeta
    return (
        a[t_next] * x0_hat
        + (1.0 - zeta) ** 0.5 * (torch.sqrt(b[t_next] ** 2 - sigma_eta**2) * eps + sigma_eta * n1)
        + zeta**0.5 * b[t_next] * n2
    )


def _renoise(x: torch.Tensor, t: int, t_next: int, schedule: Schedule, noise: NoiseSource) -> torch.Tensor:
    """RePaint-style return from t' to t (``iter_num_U`` > 1): x ← r·x + √(b_t² − r²b_t'²)·n, r = a_t/a_t'."""
    a, b = schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod
    r = a[t] / a[t_next]
    return r * x + torch.sqrt(b[t] ** 2 - r**2 * b[t_next] ** 2) * noise.draw(x.shape)
