"""A Gaussian image prior whose posterior is known: the oracle for checking sample spread and calibration.

For x ~ N(μ, Σ) on the [0, 1] scale, the diffusion variable z₀ = 2x − 1 ~ N(m, C) with m = 2μ − 1, C = 4Σ, and
the DDPM forward process x_t = a_t·z₀ + b_t·ε gives the exact MMSE denoiser (linear in x_t)

    E[z₀ | x_t] = m + a_t·C·(a_t²·C + b_t²·I)⁻¹·(x_t − a_t·m),

which :class:`GaussianEpsilon` returns as the ε-prediction (x_t − a_t·E[z₀ | x_t]) / b_t, the form the project's
samplers call as their UNet. For a linear operator A (as a matrix) and Gaussian noise σ, the posterior covariance is
Σ − ΣAᵀ(AΣAᵀ + σ²I)⁻¹AΣ. The samplers return the diffusion state at t = 0, a_0·z₀ + b_0·ε (the reference's return
mode), so :meth:`GaussianPrior.output_std` is the std of that state under the posterior, in [0, 1] units.
Used by the oracle tests and ``bench/uncertainty_oracle.py``; docs/uncertainty.md states what they find.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffpir_core.operators import Operator
from diffpir_core.sampling import reference_schedule


def _schedule_tables() -> tuple[np.ndarray, np.ndarray]:
    """a_t and b_t of the samplers' own schedule, as float64."""
    schedule = reference_schedule()
    return schedule.sqrt_alphas_cumprod.double().numpy(), schedule.sqrt_one_minus_alphas_cumprod.double().numpy()


class GaussianEpsilon(nn.Module):
    """The ε-prediction of the exact MMSE denoiser of a Gaussian prior."""

    def __init__(self, prior: GaussianPrior) -> None:
        super().__init__()
        eigenvalues, vectors = np.linalg.eigh(4.0 * prior.cov)
        self.shape = prior.shape
        self.m = torch.from_numpy(2.0 * prior.mean - 1.0)
        self.eigenvalues = torch.from_numpy(np.clip(eigenvalues, 0.0, None))
        self.vectors = torch.from_numpy(vectors)
        self.a, self.b = (torch.from_numpy(table) for table in _schedule_tables())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape or t.ndim != 1 or not bool((t == t[0]).all()):
            raise ValueError(f"expected a batch of {self.shape} images at one timestep, got {tuple(x.shape)}")
        a, b = self.a[int(t[0])], self.b[int(t[0])]
        z = x.double().reshape(x.shape[0], -1)
        gain = (self.vectors * (a * self.eigenvalues / (a * a * self.eigenvalues + b * b))) @ self.vectors.T
        z0 = self.m + (z - a * self.m) @ gain.T
        return ((z - a * z0) / b).reshape(x.shape).to(x.dtype)


class GaussianPrior:
    """x ~ N(mean, cov) for images of ``shape`` (C, H, W), flattened in C-H-W order, on the [0, 1] scale."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray, shape: tuple[int, int, int]) -> None:
        size = int(np.prod(shape))
        if mean.shape != (size,) or cov.shape != (size, size):
            raise ValueError(f"mean must be ({size},) and cov ({size}, {size}) for images {shape}")
        self.mean = np.asarray(mean, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.shape = tuple(shape)
        self._factor = np.linalg.cholesky(self.cov)

    @classmethod
    def demo(
        cls, shape: tuple[int, int, int] = (3, 8, 8), correlation_length: float = 0.0, seed: int = 0
    ) -> GaussianPrior:
        """The oracle prior of the tests and the bench: means uniform in [0.35, 0.65] and stds in [0.04, 0.1] (so
        samples rarely leave [0, 1]); with ``correlation_length`` > 0, correlation exp(−distance/length) between
        pixels and 0.8 between the channels of a pixel, else independent pixels (diagonal Σ)."""
        size = int(np.prod(shape))
        rng = np.random.default_rng(seed)
        mean, std = rng.uniform(0.35, 0.65, size), rng.uniform(0.04, 0.1, size)
        if correlation_length <= 0:
            return cls(mean, np.diag(std**2), shape)
        rows, cols = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
        points = np.stack([rows.ravel(), cols.ravel()], axis=1)
        spatial = np.exp(-np.linalg.norm(points[:, None] - points[None], axis=-1) / correlation_length)
        channels = np.full((shape[0], shape[0]), 0.8) + 0.2 * np.eye(shape[0])
        return cls(mean, std[:, None] * np.kron(channels, spatial) * std[None], shape)

    def denoiser(self) -> GaussianEpsilon:
        """The exact ε-predicting "UNet" for this prior (in eval mode)."""
        return GaussianEpsilon(self).eval()

    def sample(self, count: int, rng: np.random.Generator) -> torch.Tensor:
        """``count`` draws as a float32 (count, C, H, W) batch."""
        draws = self.mean + rng.standard_normal((count, self.mean.size)) @ self._factor.T
        return torch.from_numpy(draws).float().reshape(count, *self.shape)

    def operator_matrix(self, operator: Operator) -> np.ndarray:
        """A as a matrix (measurements × pixels), applied to the basis images; all-zero rows (pixels an inpainting
        mask hides) are dropped."""
        size = self.mean.size
        basis = torch.eye(size, dtype=torch.float32).reshape(size, *self.shape)
        matrix = operator.A(basis).reshape(size, -1).double().numpy().T
        return matrix[np.abs(matrix).sum(axis=1) > 0]

    def posterior_cov(self, operator: Operator, noise_sigma: float) -> np.ndarray:
        """Cov(x | y) for y = A(x) + noise_sigma·n."""
        a = self.operator_matrix(operator)
        gain = np.linalg.solve(a @ self.cov @ a.T + noise_sigma**2 * np.eye(a.shape[0]), a @ self.cov).T
        return self.cov - gain @ a @ self.cov

    def output_std(self, operator: Operator, noise_sigma: float) -> np.ndarray:
        """Per-pixel std, [0, 1] units, (C, H, W), of the sampler's output law under the posterior: the diffusion state
        at t = 0, (a_0·z₀ + b_0·ε)/2 + 1/2 with z₀ = 2x − 1 and x | y Gaussian."""
        a, b = _schedule_tables()
        variance = a[0] ** 2 * np.clip(np.diag(self.posterior_cov(operator, noise_sigma)), 0.0, None) + b[0] ** 2 / 4
        return np.sqrt(variance).reshape(self.shape)
