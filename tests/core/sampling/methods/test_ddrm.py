"""DDRM: refusal without an SVD, the step sequence and the noiseless limit (batching and the exact-ε oracle:
test_contract.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.operators import Inpainting, NoSVDError, SuperResolution, box_mask
from diffpir_core.sampling import METHODS, DDRMConfig, ddrm_sample


class MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the network ran although the operator was refused")


def test_refuses_an_operator_without_svd_before_running():
    op = SuperResolution(2, mode="cubic")
    with pytest.raises(NoSVDError, match="DDRM needs the operator's singular value decomposition"):
        ddrm_sample(MustNotRun(), op, torch.rand(1, 3, 16, 16), DDRMConfig())


def test_defaults_and_steps():
    config = DDRMConfig()
    assert (config.timesteps, config.eta, config.eta_b, config.singular_threshold) == (20, 0.85, 1.0, 3e-2)
    assert config.timestep_sequence() == list(range(0, 1000, 50)) and config.nfes == 20
    assert DDRMConfig(timesteps=30).nfes == 31  # range(0, 1000, 33), as the official sample_image
    assert METHODS["ddrm"].requires_svd


def test_noiseless_measured_coordinates_follow_y(clean32, vector_unet):
    """σ_y = 0, η_b = 1: every step sets the seen coordinates of x_t/√ᾱ_t' to y plus noise, so the state
    before the last step is y on the known pixels up to its noise level σ_t' ≈ 0.01 (0.005 on [0, 1])."""
    op = Inpainting(box_mask(32, 32, 8, 10, 14, 12))
    y = op.A(clean32)
    states = []
    ddrm_sample(
        vector_unet,
        op,
        y,
        DDRMConfig(),
        generator=[torch.Generator().manual_seed(0)],
        callback=lambda step: states.append(step.x),
    )
    known = op.mask.bool().expand(1, 3, -1, -1)
    x_0 = states[-2] / 2 + 0.5  # the state at t = 0, reached from t = 50 (√ᾱ_0 = 0.99995)
    assert float((x_0 - y)[known].abs().max()) < 0.05
