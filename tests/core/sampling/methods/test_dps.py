"""DPS: the measurement gradient, the respaced schedule, its costs and variance options (batching, the exact-ε
oracle and bad input: test_contract.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.models import X0Predictor, random_unet
from diffpir_core.operators import SuperResolution
from diffpir_core.sampling import METHODS, DPSConfig, dps_sample
from diffpir_core.sampling.dps import measurement_gradient, respaced_timesteps
from diffpir_core.task_kinds import TASK_KINDS

SMALL_UNET = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,1",
    "attention_resolutions": "",
}


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
    assert config.nfes == 1000 and METHODS["dps"].backward_passes(config) == 1000
    assert {kind: cls.PRESETS["dps"] for kind, cls in TASK_KINDS.items() if "dps" in cls.PRESETS} == {
        "sr": {"scale": 0.3},
        "deblur": {"scale": 0.3},
        "inpaint": {"scale": 0.5},
    }
    assert not METHODS["dps"].requires_svd


def test_learned_variance_needs_variance_channels(small_task):
    op, y = small_task("sr", 0.0)
    unet = random_unet(seed=2, learn_sigma=False, **SMALL_UNET).eval()
    with pytest.raises(ValueError, match="learn_sigma=True"):
        dps_sample(unet, op, y, DPSConfig(num_steps=2))
    out = dps_sample(unet, op, y, DPSConfig(num_steps=2, variance="fixed_large"))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
