"""Generators on arbitrary sizes and seeds: the properties the reference tests cannot cover."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffpir_core.operators import (
    Blur,
    add_noise,
    bicubic_upsample,
    blur_uint8,
    gaussian_kernel,
    imresize,
    mask_from_image,
    motion_kernel,
    random_box_mask,
    random_mask,
)


def test_gaussian_kernel_any_size():
    k = gaussian_kernel(15, 2.0)
    assert k.shape == (15, 15) and k.dtype == torch.float32
    assert abs(k.sum().item() - 1) <= 1e-6
    assert torch.equal(k, k.flip(0)) and torch.equal(k, k.T)
    assert k.argmax().item() == 7 * 15 + 7


def test_motion_kernel_any_size_seeded():
    k = motion_kernel(3, size=31)
    assert k.shape == (31, 31) and (k >= 0).all()
    assert abs(k.sum().item() - 1) <= 1e-6
    assert torch.equal(k, motion_kernel(3, size=31))
    assert not torch.equal(k, motion_kernel(4, size=31))
    assert not torch.equal(k, motion_kernel(3, size=31, draw=1))


def test_random_mask_known_fraction_non_square():
    mask = random_mask(48, 80, seed=5, known_fraction=0.25)
    assert mask.shape == (48, 80)
    assert int((mask == 0).sum()) == int(48 * 80 * 0.75)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(mask, random_mask(48, 80, seed=5, known_fraction=0.25))
    assert not torch.equal(mask, random_mask(48, 80, seed=6, known_fraction=0.25))


def test_random_box_mask_respects_margin_and_length():
    for seed in range(5):
        mask = random_box_mask(96, 128, seed=seed, length=(20, 40), margin=(8, 12))
        rows, cols = (mask == 0).nonzero(as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 20 <= height < 40 and 20 <= width < 40
        assert int((mask == 0).sum()) == height * width
        assert rows.min() >= 8 and cols.min() >= 12
        assert rows.max() < 96 - 8 and cols.max() < 128 - 12


def test_mask_from_image_roundtrip(tmp_path):
    mask = random_mask(24, 40, seed=1, known_fraction=0.6)
    path = tmp_path / "mask.png"
    Image.fromarray((mask.numpy() * 255).astype(np.uint8)).convert("RGB").save(path)
    assert torch.equal(mask_from_image(path), mask)


def test_add_noise_per_image_seeds_and_sigmas():
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = add_noise(x, [0.05, 0.1, 0.0], seed=[1, 2, 3])
    for b, (sigma, seed) in enumerate(((0.05, 1), (0.1, 2), (0.0, 3))):
        assert torch.equal(y[b : b + 1], add_noise(x[b : b + 1], sigma, seed=seed))
    assert abs((y[0] - x[0]).std().item() / 0.05 - 1) < 0.03
    assert abs((y[1] - x[1]).std().item() / 0.1 - 1) < 0.03
    assert (y[2] - x[2]).abs().max() <= 6e-8  # σ = 0 only rounds through 2x − 1
    assert not torch.equal(add_noise(x[:1], 0.05, seed=1), add_noise(x[:1], 0.05, seed=2))


def test_blur_uint8_is_truncated_circular_blur():
    rng = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 32, 32, 3, generator=rng) * 255).to(torch.uint8)
    kernels = torch.stack([gaussian_kernel(7, 1.5), motion_kernel(0, size=7)])
    blurred = blur_uint8(images, kernels)
    exact = Blur(kernels.double()).A(images.permute(0, 3, 1, 2).double()).permute(0, 2, 3, 1)
    floor = torch.floor(exact + 1e-9)  # wrap convolution, truncated; tolerance for float kernels
    assert (blurred.double() - floor).abs().max() <= 1
    assert (blurred.double() == floor).double().mean() > 0.99
    assert torch.equal(blurred[1], blur_uint8(images[1].numpy(), kernels[1]))


def test_imresize_sizes_and_constants():
    x = torch.full((1, 3, 63, 48), 0.3, dtype=torch.float64)
    out = imresize(x, 1 / 3)
    assert out.shape == (1, 3, 21, 16)
    assert (out - 0.3).abs().max() <= 1e-15
    up = imresize(torch.rand(1, 3, 8, 8), 2)
    assert up.shape == (1, 3, 16, 16)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Cubic convolution weights for the four taps at distances 1 + t, t, 1 - t, 2 - t."""
    d = np.stack([1 + t, t, 1 - t, 2 - t])
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, far)


@pytest.mark.parametrize("sf", [2, 3, 4, 8])
def test_bicubic_upsample_is_half_pixel_cubic_convolution(sf):
    # Direct evaluation of OpenCV INTER_CUBIC: source s = (o + 0.5) / sf - 0.5, A = -0.75, edge replicate.
    row = np.random.RandomState(sf).rand(12)
    up = bicubic_upsample(torch.from_numpy(row).reshape(1, 1, 1, 12).expand(1, 3, 12, 12), sf)
    assert up.shape == (1, 3, 12 * sf, 12 * sf)
    s = (np.arange(12 * sf) + 0.5) / sf - 0.5
    base = np.floor(s).astype(int)
    taps = np.clip(base[None, :] + np.arange(-1, 3)[:, None], 0, 11)
    expected = (_cubic_weights(s - base) * row[taps]).sum(axis=0)
    assert np.abs(up[0, 1, 5].numpy() - expected).max() <= 1e-12
