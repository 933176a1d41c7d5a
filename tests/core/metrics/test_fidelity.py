"""PSNR, SSIM and quantisation against the reference's own numbers and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffpir_core.metrics import float_to_uint8, psnr, rgb_to_y_uint8, ssim, uint8_to_float


def _images(seed: int, shape: tuple[int, ...] = (48, 40, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.normal(0, 20, shape)
    return np.clip(ref + noise, 0, 255).astype(np.uint8), ref


def test_reference_outputs_quantise_and_score_exactly(reference_cases) -> None:
    for name, (case, summary) in reference_cases.items():
        border = 4 if case["task"] == "sr" else 0
        gt = case["gt_uint8"].numpy()
        out_u8 = float_to_uint8(case["out_x0"])[0]
        np.testing.assert_array_equal(out_u8, case["out_uint8"].numpy(), err_msg=name)
        runs = {
            "psnr_out_zeta0": case["out_x0"],
            "psnr_out_stochastic": case["out_x0_stochastic_seed0"],
            "psnr_out_oracle_zeta0": case["out_x0_oracle_zeta0"],
        }
        for key, output in runs.items():
            value = psnr(float_to_uint8(output)[0], gt, border=border)
            assert value == pytest.approx(summary[key], abs=1e-9), (name, key)
        if case["task"] != "sr":  # the SR "degraded" number scores an OpenCV upscaling of y
            degraded = psnr(float_to_uint8(case["y_img_L"].numpy()), gt)
            assert degraded == pytest.approx(summary["psnr_degraded"], abs=1e-9), name


def test_psnr_known_values() -> None:
    ref = np.zeros((8, 8, 3), np.uint8)
    assert psnr(ref + 1, ref) == pytest.approx(20 * math.log10(255.0))
    assert psnr(ref, ref) == math.inf
    framed = ref.copy()
    framed[0, :] = framed[-1, :] = framed[:, 0] = framed[:, -1] = 200
    assert psnr(framed, ref, border=1) == math.inf
    assert psnr(framed, ref) == pytest.approx(10 * math.log10(255.0**2 / (200.0**2 * 28 / 64)))
    white = np.full((8, 8, 3), 255, np.uint8)
    assert psnr(white, ref, y_channel=True) == pytest.approx(20 * math.log10(255.0 / (235 - 16)))


def test_psnr_matches_skimage_and_batches() -> None:
    outs, refs = zip(*(_images(seed) for seed in range(3)), strict=True)
    batch = psnr(np.stack(outs), np.stack(refs), border=2)
    assert batch.shape == (3,)
    for value, out, ref in zip(batch, outs, refs, strict=True):
        expected = peak_signal_noise_ratio(ref[2:-2, 2:-2], out[2:-2, 2:-2], data_range=255)
        assert value == pytest.approx(expected, abs=1e-10)


def test_luma_matches_skimage_rgb2ycbcr() -> None:
    _, image = _images(1)
    expected = np.round(rgb2ycbcr(image)[..., 0]).astype(np.uint8)
    np.testing.assert_array_equal(rgb_to_y_uint8(image), expected)


@pytest.mark.parametrize(("border", "y_channel"), [(0, False), (4, False), (3, True)])
def test_ssim_matches_skimage(border: int, y_channel: bool) -> None:
    out, ref = _images(7)
    value = ssim(out, ref, border=border, y_channel=y_channel)
    if y_channel:
        out, ref = rgb_to_y_uint8(out), rgb_to_y_uint8(ref)
    if border:
        out, ref = out[border:-border, border:-border], ref[border:-border, border:-border]
    expected = structural_similarity(
        out,
        ref,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1 if out.ndim == 3 else None,
    )
    assert value == pytest.approx(expected, abs=1e-12)
    assert 0.0 < value < 1.0


def test_ssim_identity_batch_and_too_small() -> None:
    out, ref = _images(3)
    assert ssim(ref, ref) == pytest.approx(1.0)
    batch = ssim(np.stack([out, ref]), np.stack([ref, ref]))
    assert batch[0] == pytest.approx(ssim(out, ref)) and batch[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(out[:12, :12], ref[:12, :12], border=1)


def test_quantisation_clamps_rounds_and_round_trips() -> None:
    x = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.7, 3.4 / 255]).reshape(1, 3, 1, 2)
    u8 = float_to_uint8(x)
    assert u8.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(u8.reshape(-1), [0, 128, 255, 0, 255, 3])
    _, image = _images(5)
    back = uint8_to_float(image)
    assert back.shape == (1, 3, 48, 40) and back.dtype == torch.float32
    np.testing.assert_array_equal(float_to_uint8(back)[0], image)


def test_bad_inputs_say_what_to_do() -> None:
    out, ref = _images(2)
    with pytest.raises(TypeError, match="float_to_uint8"):
        psnr(out.astype(np.float32), ref)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(out[:-1], ref)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(out, ref, border=20)
    with pytest.raises(ValueError, match="channels-last"):
        psnr(out[..., :2], ref[..., :2])
