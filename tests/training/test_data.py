"""Training data: bundled images only, held-out images never trained on, reproducible patches."""

import numpy as np
import pytest
import torch

from diffpir_core.training import HELD_OUT_IMAGES, TRAIN_IMAGES, PatchSampler, TrainConfig, held_out_tiles, load_rgb_u8


def test_train_and_held_out_sets_are_disjoint_and_load_offline() -> None:
    assert not set(TRAIN_IMAGES) & set(HELD_OUT_IMAGES)
    gray = load_rgb_u8("camera")
    assert gray.shape == (512, 512, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    logo = load_rgb_u8("logo")  # RGBA composited on white
    assert logo.shape[-1] == 3 and logo.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown skimage.data image"):
        load_rgb_u8("lena")


def test_held_out_images_are_refused_for_training() -> None:
    with pytest.raises(ValueError, match="held-out"):
        PatchSampler(("camera", "astronaut"))
    with pytest.raises(ValueError, match="held-out"):
        TrainConfig(images=("coffee",))


def test_patches_are_reproducible_and_in_diffusion_range() -> None:
    sampler = PatchSampler(("microaneurysms",), crop=16)
    a = sampler.sample(6, torch.Generator().manual_seed(5))
    b = sampler.sample(6, torch.Generator().manual_seed(5))
    c = sampler.sample(6, torch.Generator().manual_seed(6))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0 and a.std() > 0.02


def test_held_out_tiles_cover_the_downscaled_photos() -> None:
    tiles = held_out_tiles(32, names=("chelsea",))  # 300x451 -> 64x96 -> 2x3 tiles
    assert list(tiles) == [f"chelsea_{k}" for k in range(6)]
    assert all(t.shape == (32, 32, 3) and t.dtype == np.uint8 for t in tiles.values())
    assert len({t.tobytes() for t in tiles.values()}) == 6
