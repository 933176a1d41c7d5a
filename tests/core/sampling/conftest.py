"""Fixtures of the sampler tests: the DiffPIR reference cases, the tiny reference UNet, the oracle network.

The tiny UNet's float32 convolutions round differently with the number of threads and with the input's
memory layout, so the bitwise comparison pins 2 threads and evaluates it in the layout the reference
happened to use; everything else runs single-threaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from diffpir_core.models import build_unet
from diffpir_core.operators import Blur, Inpainting, SuperResolution
from diffpir_core.sampling import DiffPIRConfig, Schedule

CASES = ["sr_x4_bicubic", "deblur_gaussian", "deblur_motion", "inpaint_box", "inpaint_random"]
"""The five reference cases (spec §8.1); case index c = position in this list (x_T seed 1000 + c)."""

REFERENCE_THREADS = 2


@lru_cache(maxsize=None)
def _load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def components(reference_dir: Path) -> dict:
    return _load(reference_dir / "components.pt")


@pytest.fixture(scope="session")
def stored_schedule(components: dict) -> Schedule:
    """The reference's own float32 tables (bit-level checks do not depend on this platform's sqrt)."""
    s = components["schedule"]
    return Schedule.from_tensors(
        betas=s["betas"],
        alphas_cumprod=s["alphas_cumprod"],
        sqrt_alphas_cumprod=s["sqrt_alphas_cumprod"],
        sqrt_one_minus_alphas_cumprod=s["sqrt_1m_alphas_cumprod"],
        sigma_bar=s["reduced_alpha_cumprod"],
    )


def hwc_to_batch(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) -> contiguous (1, 3, H, W)."""
    return image.permute(2, 0, 1).unsqueeze(0).contiguous()


class ReferenceCases:
    """The reference cases of ``diffpir_reference/`` and how to rebuild their inputs with our API."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def case(self, name: str) -> dict:
        return _load(self.folder / f"{name}.pt")

    @staticmethod
    def measurement(case: dict) -> torch.Tensor:
        return hwc_to_batch(case["y_img_L"])

    @staticmethod
    def operator(case: dict):
        """The operator of a case, with the reference's own kernel or mask."""
        if case["task"] == "sr":
            return SuperResolution(case["hp"]["sf"], kernel=case["op"]["k"])
        if case["task"] == "deblur":
            return Blur(case["op"]["k"])
        return Inpainting(hwc_to_batch(case["op"]["mask"]))

    @staticmethod
    def config(case: dict, stochastic: bool = False) -> DiffPIRConfig:
        hp = case["hp_stochastic" if stochastic else "hp"]
        return DiffPIRConfig(
            lambda_=hp["lambda_"],
            zeta=hp["zeta"],
            eta=hp["eta"],
            iter_num=hp["iter_num"],
            skip_type=hp["skip_type"],
            t_start=hp["t_start"],
            noise_sigma=hp["noise_level_img"],
            guidance_scale=hp["guidance_scale"],
            iter_num_U=hp["iter_num_U"],
        )

    @staticmethod
    def x_T_generator(name: str) -> list[torch.Generator]:
        """x_T's noise comes from a fresh CPU generator seeded 1000 + case index (spec §8.1)."""
        return [torch.Generator().manual_seed(1000 + CASES.index(name))]

    @staticmethod
    def gt(case: dict) -> torch.Tensor:
        """x_gt = P(fl32(GT)/255) as (1, 3, H, W) in diffusion space."""
        return hwc_to_batch(case["gt_uint8"].float() / 255) * 2 - 1

    @staticmethod
    def psnr_border(case: dict) -> int:
        return case["hp"]["sf"] if case["task"] == "sr" else 0


@pytest.fixture(scope="session")
def ref_cases(reference_dir: Path) -> ReferenceCases:
    return ReferenceCases(reference_dir)


class OracleUNet(nn.Module):
    """ε*(x, t) = (x − √ā_t·x_gt)/√(1 − ā_t), ā_t = fl32(float64 ᾱ_t), roots in float32 (spec §8.1);
    channels 3–5 zero. Restores perfectly up to the sampler's own scales and plumbing."""

    def __init__(self, x_gt: torch.Tensor) -> None:
        super().__init__()
        betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
        self.register_buffer("abar", torch.from_numpy(np.cumprod(1.0 - betas)).float())
        self.register_buffer("x_gt", x_gt)
        self.eval()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t][:, None, None, None]
        eps = (x - torch.sqrt(abar) * self.x_gt) / torch.sqrt(1 - abar)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


class ReferenceLayoutUNet(nn.Module):
    """The tiny UNet evaluated in the memory layout the reference used: x_T (built from an HWC array)
    counts as contiguous, every later state inherits channels-last from the HWC measurement. Only this
    layout reproduces its float32 convolutions bit for bit; the sampler itself always feeds contiguous x."""

    def __init__(self, unet: nn.Module, first_t: int = 999) -> None:
        super().__init__()
        self.unet = unet
        self.first_t = first_t
        self.downsample_factor = unet.downsample_factor
        self.eval()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if int(t[0]) != self.first_t:
            x = x.to(memory_format=torch.channels_last)
        return self.unet(x, t)


@pytest.fixture(scope="session")
def tiny_unet(reference_dir: Path) -> nn.Module:
    args = json.loads((reference_dir / "summary.json").read_text())["model_args"]
    keys = (
        "image_size num_channels num_res_blocks channel_mult attention_resolutions num_heads num_head_channels "
        "num_heads_upsample learn_sigma use_scale_shift_norm resblock_updown use_new_attention_order dropout "
        "class_cond use_fp16 use_checkpoint"
    ).split()
    unet = build_unet(**{k: args[k] for k in keys})
    unet.load_state_dict(_load(reference_dir / "tiny_unet_state_dict.pt"), strict=True)
    return unet.eval()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Sampler tests run the tiny UNet single-threaded: a 2-thread OpenMP team on a busy 2-core
    machine is up to 30× slower, and every tolerance below holds for any thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def reference_threads(one_thread: None) -> Iterator[None]:
    """The thread count whose convolution rounding matches the reference vectors bit for bit."""
    torch.set_num_threads(REFERENCE_THREADS)
    yield


@pytest.fixture(scope="session")
def oracle_for(ref_cases: ReferenceCases):
    """``oracle_for(case)`` -> the oracle network of that case's ground truth."""
    return lambda case: OracleUNet(ref_cases.gt(case))


@pytest.fixture(scope="session")
def oracle_of():
    """``oracle_of(clean)`` -> the oracle network of clean images (B, 3, H, W) in [0, 1]."""
    return lambda clean: OracleUNet(clean * 2 - 1)


@pytest.fixture(scope="session")
def reference_layout_unet(tiny_unet: nn.Module) -> ReferenceLayoutUNet:
    return ReferenceLayoutUNet(tiny_unet)
