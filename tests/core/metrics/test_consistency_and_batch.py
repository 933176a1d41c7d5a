"""Measurement consistency and per-batch scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffpir_core.metrics import float_to_uint8, measurement_rms, psnr, score_batch, ssim


class _Downsample2:
    """A small forward model: 2×2 average pooling."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2)


def test_measurement_rms_is_the_residual_level() -> None:
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([0.0, 0.05, -0.2]).reshape(3, 1, 1, 1)
    y = _Downsample2().A(x) + offsets
    np.testing.assert_allclose(measurement_rms(_Downsample2(), x, y), [0.0, 0.05, 0.2], atol=1e-7)
    with pytest.raises(ValueError, match="measurement that this operator produces"):
        measurement_rms(_Downsample2(), x, x)


def test_score_batch_matches_the_single_metrics() -> None:
    generator = torch.Generator().manual_seed(1)
    restored = torch.rand(2, 3, 24, 24, generator=generator) * 1.2 - 0.1
    reference = float_to_uint8(torch.rand(2, 3, 24, 24, generator=generator))
    scores = score_batch(restored, reference, ["psnr", "psnr_y", "ssim", "fid"], border=2)
    restored_u8 = float_to_uint8(restored)
    rows = scores.rows()
    assert [sorted(row) for row in rows] == [["psnr", "psnr_y", "ssim"]] * 2
    for i, row in enumerate(rows):
        assert row["psnr"] == psnr(restored_u8[i], reference[i], border=2)
        assert row["psnr_y"] == psnr(restored_u8[i], reference[i], border=2, y_channel=True)
        assert row["ssim"] == ssim(restored_u8[i], reference[i], border=2)
    with pytest.raises(ValueError, match="unknown metrics"):
        score_batch(restored, reference, ["psnr", "niqe"])


def test_score_batch_consistency_in_restore_mode() -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = _Downsample2().A(x) + 0.05
    scores = score_batch(x, None, ["consistency"], operator=_Downsample2(), measurement=y)
    np.testing.assert_allclose(scores.values["measurement_rms"], [0.05, 0.05], atol=1e-7)
    with pytest.raises(ValueError, match="need ground truth"):
        score_batch(x, None, ["consistency", "psnr"], operator=_Downsample2(), measurement=y)
    with pytest.raises(ValueError, match="needs the operator"):
        score_batch(x, None, ["consistency"])


def test_ssim_of_images_smaller_than_its_window_is_unavailable_not_an_error() -> None:
    """8x8 images (SSIM's window is 11x11): psnr is scored, ssim is None with the reason; it raised and failed the
    shard's metrics for good while the shard showed as done."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    restored = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255
    scores = score_batch(restored, truth, ("psnr", "ssim", "ssim_y"), border=1)
    assert [row["ssim"] for row in scores.rows()] == [None, None] and all(
        row["psnr"] == np.inf for row in scores.rows()
    )
    assert scores.unavailable["ssim"].message == (
        "ssim unavailable: its 11x11 window needs images of at least that size after the border crop of 1 pixel(s); "
        "these are 6x6. Fix: judge such small images by psnr (their ssim is left empty)"
    )
    big = rng.integers(0, 256, (1, 11, 11, 3), dtype=np.uint8)
    assert (
        score_batch(torch.from_numpy(big).permute(0, 3, 1, 2).float() / 255, big, ("ssim",)).values["ssim"][0] == 1.0
    )
