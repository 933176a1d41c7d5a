"""The linear β schedule every prior here is trained and sampled with (DDPM's: β from 1e-4 to 0.02 over 1000 steps).

Each module builds its own tables from these numbers in the precision and order its reference code uses
(float32 cumulative product for DiffPIR, float64 for DPS and the training loss, ``torch.cumprod`` for DDRM), so
only the numbers are shared, not the tables.
"""

from __future__ import annotations

import numpy as np

BETA_START = 1e-4
"""β_0 of the linear schedule."""
BETA_END = 0.02
"""β_{T−1} of the linear schedule."""
NUM_TRAIN_TIMESTEPS = 1000
"""T: the number of diffusion steps the priors were trained with (timesteps 0 … 999)."""


def linear_betas() -> np.ndarray:
    """β_t for t = 0 … T−1 as a float64 ``np.linspace`` (the start of every module's tables)."""
    return np.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=np.float64)
