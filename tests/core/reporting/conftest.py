"""Fixtures of the reporting tests: a small run's rows and facts (S3: the root conftest's server)."""

from __future__ import annotations

import numpy as np
import pytest

from diffpir_core.metrics import MetricUnavailable
from diffpir_core.reporting import ReportFacts, ReportSample

LPIPS_MISSING = MetricUnavailable("LPIPS", "cannot import torchvision", "pip install x")


@pytest.fixture
def rows() -> list[dict]:
    """Four scored images in two shards; LPIPS unavailable (None)."""
    values = [(27.25, 0.80), (25.5, 0.70), (30.125, 0.90), (24.0, 0.60)]
    return [
        {
            "id": f"img{i:03d}",
            "shard": f"shard-{i // 2:05d}",
            "task": "sr_x4",
            "psnr": p,
            "ssim": s,
            "lpips": None,
            "seconds": 1.5 + i,
        }
        for i, (p, s) in enumerate(values)
    ]


@pytest.fixture
def info() -> ReportFacts:
    return ReportFacts(
        task="sr x4 | sigma 0.05",
        dataset="s3://bucket/faces",
        prior="demo",
        nfes=100,
        wall_seconds=8.0,
        config={"sampler": {"lambda_": 7.0, "zeta": 0.3}, "seed": 0},
        fid=59.654321,
        unavailable=[LPIPS_MISSING],
        failed=[{"shard": "shard-00007", "attempts": 3, "error": "CUDA out of memory <b>"}],
        quarantined=[{"id": "broken.png", "reason": "not a PNG file", "stage": "ingest"}],
    )


@pytest.fixture
def samples() -> list[ReportSample]:
    """Two SR x4 samples (8x8 measurement, 32x32 images) with a baseline and their metrics row."""
    rng = np.random.default_rng(0)
    return [
        ReportSample(
            f"img{i:03d}",
            degraded=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            restored=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            truth=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            baseline=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            scores={
                "id": f"img{i:03d}",
                "shard": "shard-00000",
                "psnr": 25.5 + i,
                "baseline_psnr": 24.0,
                "gain_psnr": 1.5 + i,
            },
        )
        for i in range(2)
    ]
