"""DPS: the measurement gradient, the respaced schedule, batching, the exact-ε oracle and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.metrics import float_to_uint8, psnr
from diffpir_core.models import X0Predictor, random_unet
from diffpir_core.operators import SuperResolution
from diffpir_core.sampling import DPSConfig, dps_sample
from diffpir_core.sampling.dps import OFFICIAL_SCALES, measurement_gradient, respaced_timesteps

SMALL_UNET = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,1", "attention_resolutions": ""}


class SmoothEpsNet(nn.Module):
    """A small float64 ε-network, smooth everywhere (the guided UNet keeps some float32 arithmetic, whose
    rounding would swamp central differences at h = 1e-6)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Conv2d(3, 16, 3, padding=1, dtype=torch.float64)
        self.b = nn.Conv2d(16, 6, 3, padding=1, dtype=torch.float64)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x) * (1 + t[:, None, None, None] / 1000)))


@pytest.mark.parametrize("task", ["sr", "deblur", "inpaint"])
def test_gradient_matches_finite_differences(task, small_task, clean32):
    """∇_{x_t}‖y − A(x̂0(x_t))‖ by autograd equals central differences of the norm along random
    directions, at a state whose x̂0 stays inside the clamp (where the norm is smooth)."""
    predictor = X0Predictor(SmoothEpsNet().eval())
    op, y = small_task(task, 0.025)
    y = y.double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.2
    x0, _, distance, grad = measurement_gradient(predictor, op, y, x, 50)
    assert float(x0.abs().max()) < 0.99 and distance.shape == (1,)
    h = 1e-6
    for seed in range(3):
        d = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + seed))
        plus = measurement_gradient(predictor, op, y, x + h * d, 50)[2]
        minus = measurement_gradient(predictor, op, y, x - h * d, 50)[2]
        numeric = float((plus - minus).sum()) / (2 * h)
        assert numeric == pytest.approx(float((grad * d).sum()), rel=1e-7)


def test_distance_is_dps_norm_on_the_minus_one_one_scale(clean32, vector_unet):
    """Our [0, 1] operator gives exactly DPS's ‖y_pm − A_pm(x̂0)‖, A_pm(x) = 2A((x + 1)/2) − A(1)."""
    op = SuperResolution(2)
    y = op.A(clean32)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x0, _, distance, _ = measurement_gradient(X0Predictor(vector_unet), op, y, x, 500)
    ones = op.A(torch.ones(1, 3, 32, 32))
    expected = torch.linalg.vector_norm((2 * y - ones) - (2 * op.A((x0 + 1) / 2) - ones))
    assert float(distance[0]) == pytest.approx(float(expected), rel=1e-5)


def test_respacing_is_guided_diffusions():
    """Values of guided-diffusion's space_timesteps(1000, [n]) (DPS's gaussian_diffusion.py)."""
    assert respaced_timesteps(1000) == list(range(1000))
    assert respaced_timesteps(7) == [0, 166, 333, 500, 666, 832, 999]
    assert respaced_timesteps(20)[:8] == [0, 53, 105, 158, 210, 263, 315, 368]
    assert respaced_timesteps(100)[5:8] == [50, 61, 71]
    assert respaced_timesteps(1) == [0]


def test_defaults_and_costs():
    config = DPSConfig()
    assert (config.scale, config.num_steps, config.variance) == (0.3, 1000, "learned_range")
    assert config.nfes == 1000 and config.backward_passes == 1000
    assert dict(OFFICIAL_SCALES) == {"sr": 0.3, "deblur": 0.3, "inpaint": 0.5}
    assert not DPSConfig.requires_svd


@pytest.mark.parametrize("task", ["sr", "deblur", "inpaint"])
def test_exact_oracle_recovers_the_image(task, small_task, oracle_of, clean32):
    """With ε* of the ground truth x̂0 is the ground truth at every step: the uint8 result is the ground
    truth's (≥ 60 dB, measured: identical; the last posterior mean and gradient step only move it by
    float32 rounding)."""
    op, y = small_task(task, 0.025)
    config = DPSConfig(num_steps=20, scale=OFFICIAL_SCALES[task])
    out = dps_sample(oracle_of(clean32), op, y, config, generator=[torch.Generator().manual_seed(0)])
    assert float(psnr(float_to_uint8(out), float_to_uint8(clean32))[0]) >= 60.0


def test_batch_equals_single_images(small_task, clean32, vector_unet):
    """Each image has its own norm and generator: a batch of 2 is 2 single runs (up to the tiny UNet's
    batch-size-dependent float32 rounding, measured 1.2e-5 after 4 steps)."""
    op, y = small_task("sr", 0.025)
    y2 = torch.cat([y, y.flip(-1)])
    config = DPSConfig(num_steps=4)
    seeds = [3, 4]
    batch = dps_sample(vector_unet, op, y2, config, generator=[torch.Generator().manual_seed(s) for s in seeds])
    singles = torch.cat(
        [dps_sample(vector_unet, op, y2[i : i + 1], config, generator=[torch.Generator().manual_seed(s)]) for i, s in enumerate(seeds)]
    )
    assert float((batch - singles).abs().max()) <= 1e-4


def test_learned_variance_needs_variance_channels(small_task):
    op, y = small_task("sr", 0.0)
    unet = random_unet(seed=2, learn_sigma=False, **SMALL_UNET).eval()
    with pytest.raises(ValueError, match="learn_sigma=True"):
        dps_sample(unet, op, y, DPSConfig(num_steps=2))
    out = dps_sample(unet, op, y, DPSConfig(num_steps=2, variance="fixed_large"))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_bad_x_T_is_refused(small_task, vector_unet):
    op, y = small_task("sr", 0.0)
    with pytest.raises(ValueError, match="x_T must have the shape"):
        dps_sample(vector_unet, op, y, DPSConfig(num_steps=2), x_T=torch.zeros(1, 3, 16, 16))
