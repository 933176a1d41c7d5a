"""DDRM: refusal without an SVD, the exact-ε oracle, batching, the step sequence and the noiseless limit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.metrics import float_to_uint8, psnr
from diffpir_core.operators import Blur, Inpainting, NoSVDError, SuperResolution, box_mask, gaussian_kernel
from diffpir_core.sampling import DDRMConfig, ddrm_sample


class MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the network ran although the operator was refused")


def test_refuses_an_operator_without_svd_before_running():
    op = SuperResolution(2, mode="cubic")
    with pytest.raises(NoSVDError, match="DDRM needs the operator's singular value decomposition"):
        ddrm_sample(MustNotRun(), op, torch.rand(1, 3, 16, 16), DDRMConfig())


@pytest.mark.parametrize("sigma", [0.0, 0.05])
@pytest.mark.parametrize("task", ["sr", "deblur", "inpaint"])
def test_exact_oracle_recovers_the_image(task, sigma, small_task, oracle_of, clean32):
    """The result is the last x̂0 (unclamped), which ε* makes the ground truth whatever the state:
    the uint8 image is the ground truth's (≥ 60 dB; measured identical)."""
    op, y = small_task(task, sigma)
    out = ddrm_sample(oracle_of(clean32), op, y, DDRMConfig(noise_sigma=sigma), generator=[torch.Generator().manual_seed(0)])
    assert float(psnr(float_to_uint8(out), float_to_uint8(clean32))[0]) >= 60.0


def test_defaults_and_steps():
    config = DDRMConfig()
    assert (config.timesteps, config.eta, config.eta_b, config.singular_threshold) == (20, 0.85, 1.0, 3e-2)
    assert config.timestep_sequence() == list(range(0, 1000, 50)) and config.nfes == 20
    assert DDRMConfig(timesteps=30).nfes == 31  # range(0, 1000, 33), as the official sample_image
    assert DDRMConfig.requires_svd


def test_batch_equals_single_images(clean32, vector_unet):
    """Per-image kernels, noise levels and generators: a batch of 2 is 2 single runs."""
    kernels = torch.stack([gaussian_kernel(7, 1.0), gaussian_kernel(7, 2.0)])
    clean = torch.cat([clean32, clean32.flip(-1)])
    y = Blur(kernels).A(clean)
    sigmas = [0.0, 0.05]
    seeds = [1, 2]
    batch = ddrm_sample(
        vector_unet, Blur(kernels), y, DDRMConfig(timesteps=5, noise_sigma=sigmas),
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    singles = torch.cat([
        ddrm_sample(vector_unet, Blur(kernels[i]), y[i : i + 1], DDRMConfig(timesteps=5, noise_sigma=sigmas[i]),
                    generator=[torch.Generator().manual_seed(seeds[i])])
        for i in range(2)
    ])
    assert float((batch - singles).abs().max()) <= 1e-4


def test_noiseless_measured_coordinates_follow_y(clean32, vector_unet):
    """σ_y = 0, η_b = 1: every step sets the seen coordinates of x_t/√ᾱ_t' to y plus noise, so the state
    before the last step is y on the known pixels up to its noise level σ_t' ≈ 0.01 (0.005 on [0, 1])."""
    op = Inpainting(box_mask(32, 32, 8, 10, 14, 12))
    y = op.A(clean32)
    states = []
    ddrm_sample(vector_unet, op, y, DDRMConfig(), generator=[torch.Generator().manual_seed(0)],
                callback=lambda i, t, x, x0, x0_hat: states.append(x))
    known = op.mask.bool().expand(1, 3, -1, -1)
    x_0 = states[-2] / 2 + 0.5  # the state at t = 0, reached from t = 50 (√ᾱ_0 = 0.99995)
    assert float((x_0 - y)[known].abs().max()) < 0.05
