"""A UNet cast to another dtype runs end to end and agrees with its float32 self."""

import pytest
import torch

from diffpir_core.models import build_unet, random_unet

CONFIG = {
    "image_size": 32,
    "num_channels": 32,
    "channel_mult": "1,2",
    "attention_resolutions": "16",
    "num_head_channels": 16,
    "learn_sigma": True,
    "resblock_updown": True,
}


def _net() -> torch.nn.Module:
    return random_unet(seed=0, zero_std=0.05, **CONFIG).eval()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-5), (torch.bfloat16, 0.15)])
def test_cast_unet_matches_float32(dtype: torch.dtype, tol: float) -> None:
    net = _net()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 700])
    with torch.no_grad():
        ref = net(x, t)
        out = net.to(dtype)(x.to(dtype), t)
    assert out.dtype == dtype
    rel = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    assert rel < tol


def test_use_fp16_casts_only_the_torso_convolutions() -> None:
    net = build_unet(**CONFIG, use_fp16=True)
    assert net.torso_dtype == torch.float16
    assert net.time_embed[0].weight.dtype == torch.float32
    assert net.out[2].weight.dtype == torch.float32
