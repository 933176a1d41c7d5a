"""Fixtures of the DPS / DDRM / DPIR tests: the official-code vectors, their network and operators, and
small tasks on a 32×32 image (the parent conftest's ``oracle_of`` gives the exact-ε network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diffpir_core.models import random_unet
from diffpir_core.operators import Blur, Inpainting, Operator, SuperResolution, add_noise, box_mask, gaussian_kernel

VECTORS = Path(__file__).resolve().parents[3] / "data" / "methods" / "official_vectors.pt"


@pytest.fixture(scope="session")
def official_vectors() -> dict:
    """``tests/data/methods/official_vectors.pt`` (its README says how it was made)."""
    return torch.load(VECTORS, weights_only=True)


@pytest.fixture(scope="session")
def vector_platform(official_vectors: dict, vector_unet: nn.Module, probe_forwards):
    """Whether this platform reproduces the vectors' tiny-UNet forwards (two stored DDRM states, t = 950 and
    900) bit for bit, and δ_fwd where it does not; probed once per session."""
    probe = official_vectors["unet_probe"]
    return probe_forwards(
        vector_unet,
        probe["x"],
        probe["t"],
        probe["eps"],
        probed="the vectors' tiny UNet at t = 950, 900 (1 thread, contiguous)",
    )


@pytest.fixture(scope="session")
def clean32(official_vectors: dict) -> torch.Tensor:
    """The vectors' 32×32 test image, (1, 3, 32, 32) in [0, 1]."""
    return official_vectors["clean_u8"].float() / 255


@pytest.fixture(scope="session")
def vector_unet(official_vectors: dict) -> nn.Module:
    """The seeded random guided-diffusion UNet the vectors were made with (learn_sigma: 6 outputs)."""
    return random_unet(**official_vectors["unet_args"]).eval()


class ImperfectOracle(nn.Module):
    """An ε whose clean estimate is x̃0 = x_gt − mix·ε_unet(x, t) (a fixed random UNet's output): the
    exact oracle for mix = 0, otherwise a denoiser with a state-dependent error; variance channels 0."""

    def __init__(self, x_gt: torch.Tensor, unet: nn.Module, mix: float) -> None:
        super().__init__()
        betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
        self.register_buffer("abar", torch.from_numpy(np.cumprod(1.0 - betas)).float())
        self.register_buffer("x_gt", x_gt)
        self.unet, self.mix = unet, mix
        self.downsample_factor = 2
        self.eval()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t.long()][:, None, None, None]
        eps = (x - torch.sqrt(abar) * self.x_gt) / torch.sqrt(1 - abar)
        err = self.unet(x, t)[:, :3] * torch.sqrt(abar) / torch.sqrt(1 - abar)
        eps = eps + self.mix * err
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


@pytest.fixture(scope="session")
def vector_network(official_vectors: dict, clean32: torch.Tensor, vector_unet: nn.Module):
    """``vector_network(name)``: ``tiny_unet`` or ``imperfect_oracle``, as in the vectors."""
    oracle = ImperfectOracle(clean32 * 2 - 1, vector_unet, official_vectors["oracle_mix"])
    return lambda name: {"tiny_unet": vector_unet, "imperfect_oracle": oracle}[name]


def _operator(spec: dict) -> Operator:
    if spec["kind"] == "inpaint":
        return Inpainting(spec["mask"].float())
    if spec["kind"] == "sr":
        return SuperResolution(spec["scale"], kernel=spec["kernel"])
    return Blur(spec["kernel"])


@pytest.fixture(scope="session")
def operator_from_spec():
    """``operator_from_spec(spec)``: the operator of a vector case from its stored kernel or mask."""
    return _operator


@pytest.fixture(scope="session")
def small_task(clean32: torch.Tensor):
    """``small_task(task, sigma)`` -> (operator, y): SR ×2 (our bicubic kernel), Gaussian deblurring
    (9×9, std 1.6) or box inpainting of the 32×32 image, with AWGN σ on [0, 1] (seed 11)."""

    def build(task: str, sigma: float) -> tuple[Operator, torch.Tensor]:
        op = {
            "sr": lambda: SuperResolution(2),
            "deblur": lambda: Blur(gaussian_kernel(9, 1.6)),
            "inpaint": lambda: Inpainting(box_mask(32, 32, 8, 10, 14, 12)),
        }[task]()
        y = op.A(clean32)
        return op, (add_noise(y, [sigma], seed=[11]) if sigma > 0 else y)

    return build
