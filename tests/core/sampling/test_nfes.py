"""The NFE count the reports state is the number of network calls the sampler makes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.models import random_unet
from diffpir_core.operators import Inpainting, random_mask
from diffpir_core.sampling import DiffPIRConfig, diffpir_sample, network_calls, visited_timesteps


class CountingUNet(nn.Module):
    """A small UNet that counts its forward calls (one call = one network evaluation of the batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = random_unet(
            seed=0,
            image_size=32,
            num_channels=32,
            num_res_blocks=1,
            channel_mult="1,1",
            attention_resolutions="",
            learn_sigma=True,
        )
        self.downsample_factor = getattr(self.unet, "downsample_factor", None)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.unet(x, t)


@pytest.mark.parametrize(
    "settings",
    [
        {"iter_num": 5},
        {"iter_num": 5, "skip_type": "uniform"},
        {"iter_num": 4, "iter_num_U": 3},
        {"iter_num": 6, "t_start": 500, "iter_num_U": 2},
        {"iter_num": 1},
    ],
)
def test_network_calls_equal_the_reported_nfes(settings: dict) -> None:
    torch.manual_seed(0)
    counting = CountingUNet().eval()
    x = torch.rand(2, 3, 32, 32)
    operator = Inpainting(random_mask(32, 32, seed=1)[None, None].expand(2, 1, 32, 32))
    config = DiffPIRConfig(**settings, noise_sigma=0.0)
    diffpir_sample(
        counting, operator, operator.A(x), config, generator=[torch.Generator().manual_seed(i) for i in range(2)]
    )
    assert (
        counting.calls
        == config.nfes
        == network_calls(config.iter_num, config.skip_type, config.t_start, config.iter_num_U)
    )
    steps = len(visited_timesteps(config.iter_num, config.skip_type, config.t_start))
    if config.iter_num_U > 1:
        assert config.nfes < steps * config.iter_num_U  # the old report's count was too high
