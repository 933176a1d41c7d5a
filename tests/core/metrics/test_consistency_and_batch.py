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
