"""The oracle: a Gaussian prior with its exact MMSE denoiser, run through the real DiffPIR sampler and operators.

Where the posterior is known, the spread of many samples is compared with it (and with the exact law of the
sampler's update, a float64 variance recursion), and calibration is checked on held-out draws against its
finite-sample distribution. Every tolerance is a Monte-Carlo standard error measured in the test.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffpir_core.operators import Inpainting, SuperResolution, box_mask
from diffpir_core.sampling import DiffPIRConfig, reference_schedule, restore_with, visited_timesteps
from diffpir_core.uncertainty import coverage_summary, fit_scale, image_score
from diffpir_core.uncertainty.oracle import GaussianPrior

SHAPE = (3, 8, 8)
SIZE = math.prod(SHAPE)
MASK = box_mask(8, 8, 2, 2, 4, 4)  # 1 = known: a 4x4 hole in the middle
HOLE = np.broadcast_to(MASK.numpy() == 0, SHAPE)


def samples(model: torch.nn.Module, operator, y: torch.Tensor, config: DiffPIRConfig, count: int, seed: int):
    """``count`` DiffPIR samples of each image of ``y`` (one generator per sample), shape (images, count, C, H, W)."""
    batch = y.repeat_interleave(count, dim=0)
    generators = [torch.Generator().manual_seed(seed * 1_000_003 + k) for k in range(batch.shape[0])]
    out = restore_with("diffpir", model, operator, batch, config, generator=generators)
    return out.double().reshape(y.shape[0], count, *SHAPE).numpy()


def hole_std_recursion(variance: np.ndarray, config: DiffPIRConfig) -> np.ndarray:
    """The exact std ([0, 1] units) of DiffPIR's output at a hole pixel of noiseless inpainting under a diagonal prior
    with per-pixel ``variance`` ([0, 1] units): the data step leaves the pixel alone, so the update
    x' = a'·x̂0 + √(1−ζ)·(√(b'² − σ_η²)·ε̂ + σ_η·n₁) + √ζ·b'·n₂ with x̂0 = E[z₀ | x_t] is linear in x and its variance
    follows v' = g²·v + (1 − ζ)·σ_η² + ζ·b'² (computed in float64 from the sampler's own schedule)."""
    schedule = reference_schedule()
    a, b = schedule.sqrt_alphas_cumprod.double().numpy(), schedule.sqrt_one_minus_alphas_cumprod.double().numpy()
    betas = schedule.betas.double().numpy()
    c = 4 * variance
    steps = visited_timesteps(config.iter_num, config.skip_type, config.t_start)
    r = a[steps[0]] / a[schedule.nearest_timestep(0.0)]  # x_T = r·P(y) + √(b_T² − r²·b_{t_y}²)·n
    v = np.full_like(c, b[steps[0]] ** 2 - r**2 * b[schedule.nearest_timestep(0.0)] ** 2)
    zeta = config.zeta
    for t, t_next in zip(steps[:-1], steps[1:], strict=True):
        gain = a[t] * c / (a[t] ** 2 * c + b[t] ** 2)
        sigma_eta = config.eta * b[t_next] / b[t] * math.sqrt(betas[t])
        g = (
            a[t_next] * gain
            + math.sqrt(1 - zeta) * math.sqrt(b[t_next] ** 2 - sigma_eta**2) * (1 - a[t] * gain) / b[t]
        )
        v = g**2 * v + (1 - zeta) * sigma_eta**2 + zeta * b[t_next] ** 2
    return np.sqrt(v) / 2


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """Mean of independent per-pixel values and its standard error."""
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def inpainting_spread(config: DiffPIRConfig, count: int):
    """Per-pixel sample std over ``count`` samples of one noiseless inpainting measurement, with the prior."""
    prior = GaussianPrior.demo(SHAPE)
    operator = Inpainting(MASK)
    y = operator.A(prior.sample(1, np.random.default_rng(1)))
    spread = samples(prior.denoiser(), operator, y, config, count, seed=2)[0].std(axis=0, ddof=1)
    return prior, operator, spread


def test_diagonal_inpainting_spread_is_near_the_posterior_std_for_zeta_0() -> None:
    """ζ = 0 (DDIM-like, the only randomness is x_T) with 250 steps: the hole pixels' std follows the update's exact
    law, which is within 2 % of the posterior (= prior) std (1 % at 1000 steps; the rest is the coarse schedule near
    t = 0); the known pixels (posterior std 0) carry only the t = 0 noise b_0/2 of the reference's return mode."""
    config = DiffPIRConfig(iter_num=250, zeta=0.0, noise_sigma=0.0)
    prior, operator, spread = inpainting_spread(config, count=256)
    exact = prior.output_std(operator, 0.0)
    predicted = hole_std_recursion(np.diag(prior.cov).reshape(SHAPE)[HOLE], config)
    ratio_hole, error_hole = mean_and_error(spread[HOLE] / predicted)
    assert abs(ratio_hole - 1) <= 4 * error_hole, (ratio_hole, error_hole)
    assert spread[~HOLE].max() < 2 * exact[~HOLE].min()  # b_0/2 = 0.005 (2 % more from the data step's pull)
    assert (predicted / exact[HOLE]).mean() > 0.98  # float64, no sampling: the discretisation gap


def test_default_zeta_underdisperses_as_its_update_predicts() -> None:
    """ζ = 0.3, 20 steps (the defaults): the hole std follows the update's exact law, which is narrower than the
    posterior (about 0.75 of it) even with an exact denoiser, and stays narrower with 1000 steps (about 0.95):
    raw spread is not a calibrated uncertainty."""
    config = DiffPIRConfig(iter_num=20, zeta=0.3, noise_sigma=0.0)
    prior, operator, spread = inpainting_spread(config, count=256)
    variance, exact = np.diag(prior.cov).reshape(SHAPE)[HOLE], prior.output_std(operator, 0.0)[HOLE]
    predicted = hole_std_recursion(variance, config)
    ratio, error = mean_and_error(spread[HOLE] / predicted)
    assert abs(ratio - 1) <= 4 * error, (ratio, error)
    assert (predicted / exact).max() < 0.9
    assert (hole_std_recursion(variance, config.model_copy(update={"iter_num": 1000})) / exact).max() < 0.96


# --- calibration on held-out draws --------------------------------------------------------------------------------

N_CAL, N_TEST, GROUPS, K, ALPHA, DELTA = 10, 20, 100, 4, 0.1, 0.1


@pytest.fixture(scope="module")
def sr_draws() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """|error| and std of the K-sample mean for GROUPS × (N_CAL + N_TEST) fresh images of a correlated prior, SR ×2
    with σ = 0.05 (fresh x and fresh measurement noise per image), DiffPIR at its default ζ with 20 steps."""
    torch.set_num_threads(1)
    prior = GaussianPrior.demo(SHAPE, correlation_length=1.5)
    operator = SuperResolution(2, kernel=torch.full((2, 2), 0.25))
    rng = np.random.default_rng(3)
    x = prior.sample(GROUPS * (N_CAL + N_TEST), rng)
    y = operator.A(x) + 0.05 * torch.from_numpy(rng.standard_normal(operator.A(x).shape)).float()
    draws = samples(prior.denoiser(), operator, y, DiffPIRConfig(iter_num=20, noise_sigma=0.05), K, seed=4)
    errors = list(np.abs(draws.mean(axis=1) - x.double().numpy()))
    return errors, list(draws.std(axis=1, ddof=1))


def held_out_coverage(errors: list[np.ndarray], stds: list[np.ndarray]) -> tuple[int, list[float]]:
    """Covered test images summed over GROUPS disjoint calibration/test groups, and each group's scale."""
    covered, scales = 0, []
    size = N_CAL + N_TEST
    for g in range(GROUPS):
        cal = slice(g * size, g * size + N_CAL)
        test = slice(g * size + N_CAL, (g + 1) * size)
        scale = fit_scale([image_score(e, s, ALPHA) for e, s in zip(errors[cal], stds[cal], strict=True)], DELTA)
        summary = coverage_summary(errors[test], stds[test], scale, ALPHA, DELTA, n_calibration=N_CAL)
        covered += round(summary["image_coverage"] * N_TEST)
        scales.append(scale)
    return covered, scales


def coverage_interval(probability: float = 1e-3) -> tuple[int, int]:
    """Central interval of the covered count: with continuous exchangeable scores a calibration's coverage is
    Beta(k, n + 1 − k) with k = ⌈(n + 1)(1 − δ)⌉ (mean k/(n + 1) ∈ [1 − δ, 1 − δ + 1/(n + 1)]), so each group's
    count is Beta-binomial and the total is their sum (exact pmf by convolution)."""
    k = math.ceil((N_CAL + 1) * (1 - DELTA))
    group = stats.betabinom.pmf(np.arange(N_TEST + 1), N_TEST, k, N_CAL + 1 - k)
    total = np.array([1.0])
    for _ in range(GROUPS):
        total = np.convolve(total, group)
    cdf = np.cumsum(total)
    return int(np.searchsorted(cdf, probability / 2)), int(np.searchsorted(cdf, 1 - probability / 2))


def test_calibration_reaches_its_nominal_coverage_on_held_out_draws(sr_draws) -> None:
    errors, stds = sr_draws
    covered, _ = held_out_coverage(errors, stds)
    low, high = coverage_interval()
    tests = GROUPS * N_TEST
    assert low <= covered <= high, f"{covered}/{tests} covered, expected {low}..{high}"
    assert 1 - DELTA <= math.ceil((N_CAL + 1) * (1 - DELTA)) / (N_CAL + 1) <= 1 - DELTA + 1 / (N_CAL + 1)


def test_shrunk_std_gets_a_larger_scale_and_the_same_coverage(sr_draws) -> None:
    """Calibration is not a no-op: std × 0.3 gets q̂ / 0.3 and covers the same images; keeping the old q̂ (what
    showing raw spread amounts to) would lose the guarantee."""
    errors, stds = sr_draws
    shrunk = [0.3 * s for s in stds]
    covered, scales = held_out_coverage(errors, stds)
    covered_shrunk, scales_shrunk = held_out_coverage(errors, shrunk)
    assert covered_shrunk == covered
    np.testing.assert_allclose(np.array(scales_shrunk) * 0.3, scales, rtol=1e-9)
    size = N_CAL + N_TEST
    stale = sum(
        round(
            coverage_summary(
                errors[g * size + N_CAL :][:N_TEST], shrunk[g * size + N_CAL :][:N_TEST], scales[g], ALPHA, DELTA
            )["image_coverage"]
            * N_TEST
        )
        for g in range(GROUPS)
    )
    assert stale < coverage_interval()[0], (stale, coverage_interval())
