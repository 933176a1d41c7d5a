"""The hybrid loss: a proper discretised likelihood, zero KL for the true posterior, and the
stop-gradient that lets the VLB train only the variance half."""

import pytest
import torch

from diffpir_core.training.objective import DiffusionObjective, discretized_gaussian_log_likelihood


def test_discretised_likelihood_sums_to_one_over_the_256_levels() -> None:
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    for mean, log_scale in [(0.1, -3.0), (-0.95, -2.0), (0.99, -1.0)]:
        means, log_scales = torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        logp = discretized_gaussian_log_likelihood(levels, means, log_scales)
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_vlb_vanishes_for_the_true_noise_and_the_posterior_variance() -> None:
    objective = DiffusionObjective()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([1, 10, 500, 999])
    x_t = objective.q_sample(x0, t, noise)
    exact = torch.cat([noise, -torch.ones_like(noise)], dim=1)  # v = -1: Σ = β̃_t, the true posterior variance
    terms = objective.loss(exact, x0, x_t, t, noise)
    assert terms.mse.item() == 0.0
    assert terms.vlb.item() == pytest.approx(0.0, abs=1e-4)
    wrong_variance = torch.cat([noise, torch.ones_like(noise)], dim=1)  # Σ = β_t
    assert objective.loss(wrong_variance, x0, x_t, t, noise).vlb.item() > 1e-3


def test_vlb_trains_only_the_variance_and_mse_only_the_mean() -> None:
    objective = DiffusionObjective()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 300, 900])
    x_t = objective.q_sample(x0, t, noise)
    output = torch.randn(3, 6, 8, 8, generator=gen).requires_grad_()
    terms = objective.loss(output, x0, x_t, t, noise)
    (grad_vlb,) = torch.autograd.grad(terms.vlb, output, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(terms.mse, output)
    assert grad_vlb[:, :3].abs().max().item() == 0.0 and grad_vlb[:, 3:].abs().max().item() > 0.0
    assert grad_mse[:, 3:].abs().max().item() == 0.0 and grad_mse[:, :3].abs().max().item() > 0.0


def test_forward_noising_reaches_unit_variance_at_the_last_step() -> None:
    objective = DiffusionObjective()
    gen = torch.Generator().manual_seed(2)
    x0 = torch.ones(1, 3, 64, 64)
    noise = torch.randn(x0.shape, generator=gen)
    x_last = objective.q_sample(x0, torch.tensor([999]), noise)
    assert x_last.mean().item() == pytest.approx(objective.sqrt_alphas_cumprod[999].item(), abs=0.03)
    assert x_last.std().item() == pytest.approx(1.0, abs=0.03)
