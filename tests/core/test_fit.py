"""Images of any size: padding for the network and cropping back, and tiled evaluation of large images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.models import random_unet
from diffpir_core.models.tiling import TiledUNet, tile_starts
from diffpir_core.runs.batches import Fit, ShardInputs, measurement_padding, restore_batchwise
from diffpir_core.task_kinds import task_kind, task_preset

TINY = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "",
    "learn_sigma": True,
}


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return random_unet(seed=0, **TINY).eval()


class Recorder(nn.Module):
    """Pixel-wise network (1×1 convolution): tiling must not change its output at all; records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 1)
        self.downsample_factor = 2
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.conv(x) * (1 + t.float()[:, None, None, None] / 1000)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 32, 8), (64, 32, 8), (33, 32, 0), (32, 32, 8), (250, 64, 16)]
)
def test_tiles_cover_the_image_with_at_least_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(0, length - tile)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_tiled_evaluation_of_a_pixelwise_network_is_exact_and_bounded_by_the_tile_batch() -> None:
    net = Recorder()
    x, t = torch.rand(2, 3, 70, 100), torch.tensor([10, 900])
    tiled = TiledUNet(net, tile=32, overlap=8, tile_batch=5)
    torch.testing.assert_close(tiled(x, t), net(x, t), rtol=0, atol=1e-6)
    assert max(net.batches[:-1]) <= 5 and len(net.batches) > 2  # tiles went through in chunks of <= 5
    small = torch.rand(1, 3, 32, 24)
    assert torch.equal(tiled(small, t[:1]), net(small, t[:1]))  # no larger than a tile: one plain call


def test_padding_makes_every_size_fit_the_network(unet: nn.Module) -> None:
    sr, deblur = task_kind("sr")(scale=4), task_kind("deblur")()
    assert measurement_padding(unet, deblur, 37, 45) == (1, 1)  # factor 2
    assert measurement_padding(unet, sr, 9, 10) == (0, 0)  # 36 x 40 are even already
    assert measurement_padding(unet, task_kind("sr")(scale=3), 7, 5) == (1, 1)  # 21 -> 24 needs lcm(2, 3) = 6


def test_tiny_images_are_padded_to_what_the_network_and_the_kernel_take(unet: nn.Module) -> None:
    """A 1x1 or 2x2 image reaches the network's deepest level as one pixel (group norm: "Expected more than 1 value
    per channel") and an 8x8 SR x2 image is smaller than its 25x25 kernel ("the 25x25 kernel does not fit"): padding
    now covers both, so such shards restore instead of failing for good."""
    denoise, sr = task_kind("denoise")(), task_kind("sr")(scale=2)
    assert measurement_padding(unet, denoise, 1, 2) == (3, 2)  # 2x2 at the deepest of one downsampling: 4x4
    assert measurement_padding(unet, sr, 4, 12, kernel=25) == (9, 1)  # 26 (even, >= 25) restored pixels: 13 measured
    assert measurement_padding(unet, sr, 40, 40, kernel=25) == (0, 0)
    config = task_preset("denoise", iter_num=2)
    for side in (1, 2):
        inputs = ShardInputs(["a"], torch.rand(1, 3, side, side), {})
        restored, _ = restore_batchwise(unet, inputs, denoise, config, seed=0, batch_size=1, device="cpu")
        assert restored.shape == (1, side, side, 3)
    sr_config = task_preset("sr", iter_num=2)
    restored, _ = restore_batchwise(
        unet, ShardInputs(["a"], torch.rand(1, 3, 4, 4), {}), sr, sr_config, seed=0, batch_size=1, device="cpu"
    )
    assert restored.shape == (1, 8, 8, 3)


@pytest.mark.parametrize(
    ("kind", "params", "shape", "restored"),
    [
        ({"kind": "sr", "scale": 2}, {}, (19, 23), (38, 46)),
        ({"kind": "deblur", "kernel": "gaussian"}, {"kernel": torch.full((5, 5), 1 / 25)}, (37, 45), (37, 45)),
        ({"kind": "inpaint", "mask": "box"}, {"mask": torch.ones(37, 45)}, (37, 45), (37, 45)),
        ({"kind": "denoise"}, {}, (70, 41), (70, 41)),
    ],
)
def test_every_image_comes_back_at_its_own_size(unet, kind, params, shape, restored) -> None:
    from pydantic import TypeAdapter

    from diffpir_core.task_kinds import TaskSpec

    task = TypeAdapter(TaskSpec).validate_python(kind)
    inputs = ShardInputs(["a", "b"], torch.rand(2, 3, *shape), params)
    config = task_preset(task.kind, iter_num=2)
    out, _ = restore_batchwise(unet, inputs, task, config, seed=0, batch_size=2, device="cpu")
    assert out.shape == (2, *restored, 3)


def test_without_padding_an_odd_size_is_refused_with_the_fix(unet: nn.Module) -> None:
    inputs = ShardInputs(["a"], torch.rand(1, 3, 37, 45), {"kernel": torch.full((5, 5), 1 / 25)})
    with pytest.raises(ValueError, match="multiples of 2.*pad the measurement by 1 rows and 1 columns"):
        restore_batchwise(
            unet,
            inputs,
            task_kind("deblur")(),
            task_preset("deblur", iter_num=2),
            seed=0,
            batch_size=1,
            device="cpu",
            fit=Fit(pad=False),
        )


def test_tiled_restoration_is_deterministic_and_independent_of_the_batch(unet: nn.Module) -> None:
    task = task_kind("deblur")()
    params = {"kernel": torch.full((2, 5, 5), 1 / 25)}
    inputs = ShardInputs(["a", "b"], torch.rand(2, 3, 48, 80), params)
    config = task_preset("deblur", iter_num=3)
    fit = Fit(tile=32, overlap=8, tile_batch=3)
    both, _ = restore_batchwise(unet, inputs, task, config, seed=1, batch_size=2, device="cpu", fit=fit)
    again, _ = restore_batchwise(unet, inputs, task, config, seed=1, batch_size=2, device="cpu", fit=fit)
    alone, _ = restore_batchwise(unet, inputs.batch(1, 2), task, config, seed=1, batch_size=1, device="cpu", fit=fit)
    assert (both == again).all()
    assert abs(both[1].astype(int) - alone[0].astype(int)).max() <= 1  # uint8; conv batching rounds by ulps
    whole, _ = restore_batchwise(unet, inputs, task, config, seed=1, batch_size=2, device="cpu", fit=Fit(tile=0))
    assert (whole != both).any()  # the tiles really were used
