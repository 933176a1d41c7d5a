"""The DiffPIR noise schedule, data-step weights ρ_t and the visited timestep sequence (docs/algorithm.md §2–§3).

Notation (Zhu et al., NTIRE 2023; docs/algorithm.md §1.2): β_t linear, ᾱ_t = ∏_{s≤t} (1 − β_s), a_t = √ᾱ_t,
b_t = √(1 − ᾱ_t), σ̄_t = b_t / a_t (the equivalent image-noise std in VE form: x_t / a_t = x0 + σ̄_t ε),
ρ_t = λ σ_n² / σ̄_t². Everything is float32 and follows the reference's rounding so that ρ and the
trajectory match it bit for bit; the network-side float64 coefficients live in ``X0Predictor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from diffpir_core.models.betas import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS

SkipType = Literal["quad", "uniform"]

MIN_NOISE_SIGMA = 0.001
"""σ_n = max(0.001, σ): the reference's floor on the measurement noise used in ρ_t (docs/algorithm.md §3.2)."""


@dataclass(frozen=True)
class Schedule:
    """Float32 per-timestep tables of the linear DDPM schedule, indexed by t = 0 … T−1.

    ``betas`` β_t, ``alphas_cumprod`` ᾱ_t, ``sqrt_alphas_cumprod`` a_t, ``sqrt_one_minus_alphas_cumprod``
    b_t, ``sigma_bar`` σ̄_t; all float32 tensors of shape (T,) on the CPU.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sigma_bar: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {name: tuple(getattr(self, name).shape) for name in self.__dataclass_fields__}
        if len(set(shapes.values())) != 1 or len(shapes["betas"]) != 1:
            raise ValueError(f"schedule tables must all be 1-D of the same length, got shapes {shapes}")
        for name in self.__dataclass_fields__:
            if getattr(self, name).dtype != torch.float32:
                raise ValueError(f"schedule table {name!r} must be float32 (the reference's precision)")

    @classmethod
    def linear(
        cls, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
    ) -> Schedule:
        """The reference schedule: β from a float64 linspace cast to float32, ᾱ the *sequential*
        float32 cumulative product (NumPy's; ``torch.cumprod`` rounds differently), roots by PyTorch
        float32 ``sqrt`` (which is what produced the stored reference tables on CPU)."""
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64).astype(np.float32)
        alphas_cumprod = torch.from_numpy(np.cumprod(np.float32(1.0) - betas, dtype=np.float32))
        a = torch.sqrt(alphas_cumprod)
        b = torch.sqrt(1.0 - alphas_cumprod)
        return cls(torch.from_numpy(betas), alphas_cumprod, a, b, b / a)

    @classmethod
    def from_tensors(
        cls,
        *,
        betas: torch.Tensor,
        alphas_cumprod: torch.Tensor,
        sqrt_alphas_cumprod: torch.Tensor,
        sqrt_one_minus_alphas_cumprod: torch.Tensor,
        sigma_bar: torch.Tensor,
    ) -> Schedule:
        """A schedule from stored tables (e.g. ``components.pt``), for bit-level comparisons on a
        platform whose float32 ``sqrt`` rounds differently from the one that made them."""
        tables = (betas, alphas_cumprod, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, sigma_bar)
        return cls(*(torch.as_tensor(v).detach().cpu().clone() for v in tables))

    def to(self, device: torch.device | str) -> Schedule:
        """The same tables on ``device``."""
        return Schedule(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def nearest_timestep(self, sigma_bar_value: float) -> int:
        """The t whose σ̄_t is nearest to ``sigma_bar_value`` (the reference's σ → timestep lookup)."""
        return int(torch.argmin((self.sigma_bar.double() - float(sigma_bar_value)).abs()))

    def rho(self, t: int, weight: torch.Tensor) -> torch.Tensor:
        """ρ_t = λσ_n² / σ̄_t² per image, rounded as the reference: fl32(fl32(1/fl32(σ̄_t²)) · weight),
        with ``weight`` = fl32(λσ_n²) from :func:`rho_weight` (float32, shape (B,))."""
        sb = self.sigma_bar[t]
        return (1.0 / (sb * sb)) * weight


def rho_weight(lambda_: float, noise_sigma: Sequence[float]) -> torch.Tensor:
    """fl32(λ·σ_n²) evaluated in float64, σ_n = max(0.001, σ) per image (σ on the [0, 1] scale).

    σ is taken as Python floats: a float32 σ (0.05 → 0.0500000007) would move ρ by an ulp.
    """
    sigma_n = torch.tensor([max(MIN_NOISE_SIGMA, float(s)) for s in noise_sigma], dtype=torch.float64)
    return (lambda_ * sigma_n**2).float()


def visited_timesteps(
    iter_num: int,
    skip_type: SkipType = "quad",
    t_start: int | None = None,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> list[int]:
    """The timesteps the sampler visits, from high noise down to 0 (docs/algorithm.md §3.3).

    ``quad``: q_j = trunc(√linspace(0, T², N)_j), the last entry T becoming T−1 (N steps, big strides
    at high noise). ``uniform``: q = 0, skip, …, (N−1)·skip plus T−1 when skip = ⌊T/N⌋ > 1 (N+1 steps,
    as the reference). Visited t_j = T−1−q_j; steps with t_j > ``t_start`` are dropped.
    """
    if not 1 <= iter_num <= num_train_timesteps:
        raise ValueError(f"iter_num must be in 1…{num_train_timesteps}, got {iter_num}")
    last = num_train_timesteps - 1
    if skip_type == "quad":
        q = np.sqrt(np.linspace(0.0, float(num_train_timesteps) ** 2, iter_num)).astype(np.int64)
        q[-1] = min(int(q[-1]), last)
        seq = q.tolist()
    elif skip_type == "uniform":
        skip = num_train_timesteps // iter_num
        seq = [j * skip for j in range(iter_num)] + ([last] if skip > 1 else [])
    else:
        raise ValueError(f"skip_type must be 'quad' or 'uniform', got {skip_type!r}")
    t_start = last if t_start is None else t_start
    return [last - q for q in seq if last - q <= t_start]


def network_calls(
    iter_num: int,
    skip_type: SkipType = "quad",
    t_start: int | None = None,
    iter_num_U: int = 1,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> int:
    """Network evaluations per image (NFEs) of one run: every visited step but the last repeats
    ``iter_num_U`` times, the last one only evaluates the network once (``diffpir_sample``)."""
    steps = len(visited_timesteps(iter_num, skip_type, t_start, num_train_timesteps))
    return 0 if steps == 0 else (steps - 1) * iter_num_U + 1
