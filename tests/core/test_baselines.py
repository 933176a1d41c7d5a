"""The classical baselines of the quality check do what they claim, so the comparison is fair."""

import numpy as np
import torch

from diffpir_core.metrics import float_to_uint8, psnr
from diffpir_core.operators import Blur, add_noise, gaussian_kernel, random_mask
from diffpir_core.task_kinds.baselines import bicubic_sr, biharmonic_inpaint, wiener_deblur
from diffpir_core.training import held_out_tiles


def _tile() -> torch.Tensor:
    tile = held_out_tiles(64, names=("astronaut",))["astronaut_0"]
    return torch.from_numpy(tile).permute(2, 0, 1)[None].float() / 255.0


def test_wiener_inverts_a_circular_blur_and_beats_the_blurred_input_under_noise() -> None:
    x = _tile()
    kernel = gaussian_kernel(15, 1.6)[None]
    blurred = Blur(kernel).A(x).float()
    ref = float_to_uint8(x)
    nearly_clean = wiener_deblur(blurred, kernel, 1e-4)
    assert psnr(float_to_uint8(nearly_clean), ref) > psnr(float_to_uint8(blurred), ref) + 8.0
    noisy = add_noise(blurred, 0.05, 0)
    restored = wiener_deblur(noisy, kernel, 0.05)
    assert psnr(float_to_uint8(restored), ref) > psnr(float_to_uint8(noisy.clamp(0, 1)), ref) + 2.0


def test_bicubic_sr_upsamples_by_the_scale() -> None:
    y = torch.rand(2, 3, 16, 16)
    out = bicubic_sr(y, 4)
    assert out.shape == (2, 3, 64, 64) and out.min() >= 0 and out.max() <= 1


def test_biharmonic_keeps_known_pixels_and_fills_holes_smoothly() -> None:
    x = _tile()
    mask = random_mask(64, 64, seed=1, known_fraction=0.5)[None]
    y = x * mask[:, None]
    out = biharmonic_inpaint(y, mask)
    known = mask[0].bool()
    assert torch.allclose(out[0][:, known], x[0][:, known], atol=1e-6)
    assert psnr(float_to_uint8(out), float_to_uint8(x)) > psnr(float_to_uint8(y), float_to_uint8(x)) + 10.0
    assert np.isfinite(out.numpy()).all()


def test_wiener_takes_a_kernel_larger_than_its_image() -> None:
    """A 61x61 Gaussian on a 48x80 image (evaluate mode's default kernel on a small photo): the transfer function
    wraps the kernel around the image as circular convolution does, so an exact, noiseless blur is undone."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    truth = ndimage.gaussian_filter(rng.random((48, 80)), 2)
    axis = np.exp(-0.5 * ((np.arange(61) - 30) / 1.2) ** 2)
    kernel = np.outer(axis, axis) / np.outer(axis, axis).sum()
    blurred = ndimage.convolve(truth, kernel, mode="wrap")
    y = torch.from_numpy(np.repeat(blurred[None, None], 3, axis=1)).float()
    restored = wiener_deblur(y, torch.from_numpy(kernel)[None].float(), 1e-4)
    assert restored.shape == y.shape
    error = float((restored[0, 0].double() - torch.from_numpy(truth)).abs().mean())
    assert error < 0.5 * float(np.abs(blurred - truth).mean()), error
