"""The x0-predictor adapter: wraps an ε-predicting UNet into a clean-image estimator (docs/algorithm.md §4.1)."""

import numpy as np
import torch
from torch import nn

from diffpir_core.models.betas import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS


def _network_side_coefficients(beta_start: float, beta_end: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """c1_t = √(1/ᾱ_t), c2_t = √(1/ᾱ_t − 1) from the float64 linear schedule, cast to float32 at use."""
    betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    c1 = np.sqrt(1.0 / alphas_cumprod)
    c2 = np.sqrt(1.0 / alphas_cumprod - 1.0)
    return torch.from_numpy(c1).float(), torch.from_numpy(c2).float()


class X0Predictor(nn.Module):
    """x̃0 = clamp(c1_t·x_t − c2_t·ε̂(x_t, t), −1, 1) in diffusion space [−1, 1].

    ``unet(x, t)`` returns ε̂ in its first 3 channels (the variance half, if any, is ignored: DiffPIR
    never uses it). Timesteps are integers in [0, 999], one per sample.
    """

    def __init__(self, unet: nn.Module, beta_start: float = BETA_START, beta_end: float = BETA_END) -> None:
        super().__init__()
        self.unet = unet
        c1, c2 = _network_side_coefficients(beta_start, beta_end, NUM_TRAIN_TIMESTEPS)
        self.register_buffer("c1", c1, persistent=False)
        self.register_buffer("c2", c2, persistent=False)

    def epsilon(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's noise estimate ε̂ (B, 3, H, W), in x's dtype."""
        return self.unet(x, t)[:, :3].to(x.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict(x, t)[0]

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x̃0 and, from the same network call, the UNet's variance channels (None for a 3-channel UNet)."""
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t must hold one integer timestep per sample: got shape {tuple(t.shape)} for a batch of {x.shape[0]}"
            )
        t = t.to(device=x.device, dtype=torch.long)
        c1 = self.c1.to(x.device)[t].to(x.dtype)[:, None, None, None]
        c2 = self.c2.to(x.device)[t].to(x.dtype)[:, None, None, None]
        out = self.unet(x, t)
        variance = out[:, 3:].to(x.dtype) if out.shape[1] > 3 else None
        return (c1 * x - c2 * out[:, :3].to(x.dtype)).clamp(-1.0, 1.0), variance
