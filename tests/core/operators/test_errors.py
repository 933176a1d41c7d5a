"""Bad input is refused with a message that says what to do."""

import pytest
import torch

from diffpir_core.operators import (
    Blur,
    Inpainting,
    SuperResolution,
    add_noise,
    blur_uint8,
    box_mask,
    gaussian_kernel,
    mask_from_image,
    motion_kernel,
    random_box_mask,
    random_mask,
)

IMAGES = torch.rand(2, 3, 16, 16)


@pytest.mark.parametrize("bad", [torch.rand(3, 16, 16), torch.rand(2, 1, 16, 16), torch.rand(2, 16, 16, 3)])
def test_wrong_image_shape(bad):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Blur(gaussian_kernel(5, 1.0)).A(bad)


def test_integer_images_refused():
    with pytest.raises(TypeError, match="divide uint8 by 255"):
        Blur(gaussian_kernel(5, 1.0)).prepare((IMAGES * 255).to(torch.uint8))


def test_kernel_shape_and_values():
    with pytest.raises(ValueError, match=r"\(kh, kw\)"):
        Blur(torch.ones(5))
    with pytest.raises(ValueError, match="positive"):
        Blur(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="finite"):
        Blur(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="does not fit"):
        Blur(gaussian_kernel(21, 2.0)).A(IMAGES)


def test_kernel_not_summing_to_one_is_normalised_with_warning():
    k = gaussian_kernel(5, 1.0).double() * 2
    with pytest.warns(UserWarning, match="normalising"):
        op = Blur(k)
    assert torch.allclose(op.kernel[0], k / k.sum(), rtol=0, atol=1e-15)
    assert abs(op.kernel.sum().item() - 1) <= 1e-15


def test_per_image_parameters_must_match_batch():
    with pytest.raises(ValueError, match="3 kernels .* 2 images"):
        Blur(torch.stack([gaussian_kernel(5, s) for s in (1.0, 2.0, 3.0)])).prepare(IMAGES)
    with pytest.raises(ValueError, match="3 masks .* 2 images"):
        Inpainting(torch.ones(3, 1, 16, 16)).A(IMAGES)


def test_rho_count_must_match_batch():
    with pytest.raises(ValueError, match="one per image"):
        Blur(gaussian_kernel(5, 1.0)).prepare(IMAGES).prox(IMAGES, torch.ones(3))


@pytest.mark.parametrize(
    "op",
    [
        Blur(gaussian_kernel(5, 1.0)),
        SuperResolution(2, kernel=gaussian_kernel(5, 1.0)),
        Inpainting(torch.ones(16, 16)),
    ],
)
def test_prox_estimate_must_match_measurement(op):
    y = op.A(IMAGES)
    with pytest.raises(ValueError, match="call prepare"):
        op.prepare(y).prox(IMAGES[:1], 0.1)


def test_mask_shape_size_and_values():
    with pytest.raises(ValueError, match="does not match|but y is"):
        Inpainting(torch.ones(32, 32)).prepare(IMAGES)
    with pytest.raises(ValueError, match=r"\(H, W\), \(B, 1, H, W\)"):
        Inpainting(torch.ones(16, 16, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Inpainting(torch.full((16, 16), 2.0))


def test_sr_scale_mode_and_size():
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 8\)"):
        SuperResolution(5)
    with pytest.raises(ValueError, match="'blur'.*'cubic'"):
        SuperResolution(2, mode="nearest")
    with pytest.raises(ValueError, match="drop kernel="):
        SuperResolution(2, kernel=gaussian_kernel(5, 1.0), mode="cubic")
    with pytest.raises(ValueError, match="modcrop"):
        SuperResolution(3, kernel=gaussian_kernel(5, 1.0)).A(IMAGES)


def test_generator_arguments():
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError, match="positive"):
        gaussian_kernel(5, 0.0)
    with pytest.raises(ValueError, match="intensity"):
        motion_kernel(0, intensity=1.5)
    with pytest.raises(ValueError, match="does not fit"):
        box_mask(16, 16, top=10, left=0, box_height=8, box_width=4)
    with pytest.raises(ValueError, match="reduce length or margin"):
        random_box_mask(64)
    with pytest.raises(ValueError, match="known_fraction"):
        random_mask(16, known_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="not found"):
        mask_from_image("/nonexistent/mask.png")
    with pytest.raises(ValueError, match="one per image"):
        add_noise(IMAGES, 0.1, seed=[0, 1, 2])
    with pytest.raises(ValueError, match="uint8"):
        blur_uint8(torch.zeros(16, 16, 3), gaussian_kernel(5, 1.0))
