"""Fréchet distance against closed forms and scipy's sqrtm; sharded statistics against np.cov."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from diffpir_core.metrics import FIDStats, MetricUnavailable, fid_from_stats, frechet_distance


def _spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    factor = rng.normal(size=(dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


def _fd_with_sqrtm(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with a general matrix square root, as pytorch-fid evaluates it."""
    covmean = linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def test_diagonal_gaussians_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    d1, d2 = rng.uniform(0.1, 4.0, 32), rng.uniform(0.1, 4.0, 32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, np.diag(d1), mu1, np.diag(d1)) == pytest.approx(0.0, abs=1e-10)


def test_full_covariances_match_sqrtm_formula() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=24), rng.normal(size=24)
    sigma1, sigma2 = _spd(rng, 24), _spd(rng, 24)
    value = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert value == pytest.approx(_fd_with_sqrtm(mu1, sigma1, mu2, sigma2), rel=1e-9)
    assert value == pytest.approx(frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-9)


def test_rank_deficient_covariances_stay_finite() -> None:
    rng = np.random.default_rng(2)
    a, b = FIDStats.from_features(rng.normal(size=(5, 64))), FIDStats.from_features(rng.normal(size=(6, 64)))
    value = fid_from_stats(a, b)
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    assert value == pytest.approx(_fd_with_sqrtm(a.mean, a.cov, b.mean, b.cov), rel=1e-4)


def test_shard_statistics_merge_exactly() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(loc=3.0, scale=2.0, size=(103, 16)) @ rng.normal(size=(16, 16))
    shards = np.split(features, [1, 17, 17, 60])  # sizes 1, 16, 0, 43, 43
    merged = FIDStats.empty(16)
    for shard in shards:
        merged = merged.merge(FIDStats.from_features(shard))
    reverse = FIDStats.empty(16)
    for shard in reversed(shards):
        reverse.update(shard)
    for stats in (merged, reverse):
        assert stats.count == 103
        np.testing.assert_allclose(stats.mean, features.mean(axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=1e-10, atol=1e-10)


def test_sampled_gaussians_approach_the_closed_form() -> None:
    rng = np.random.default_rng(4)
    d1, d2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    mu2 = np.array([0.5, -1.0, 0.0, 2.0])
    expected = mu2 @ mu2 + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    restored = FIDStats.empty(4)
    for _ in range(4):  # four shards
        restored.update(rng.normal(size=(50_000, 4)) * np.sqrt(d1))
    reference = FIDStats.from_features(mu2 + rng.normal(size=(200_000, 4)) * np.sqrt(d2))
    assert fid_from_stats(restored, reference) == pytest.approx(expected, abs=0.1)


def test_statistics_round_trip_through_fsspec(tmp_path: Path) -> None:
    stats = FIDStats.from_features(np.random.default_rng(5).normal(size=(9, 8)))
    for uri in (str(tmp_path / "fid" / "restored.npz"), "memory://fid/restored.npz"):
        stats.save(uri, {"auto_mkdir": True} if "://" not in uri else None)
        loaded = FIDStats.load(uri)
        assert loaded.count == 9
        np.testing.assert_array_equal(loaded.mean, stats.mean)
        np.testing.assert_array_equal(loaded.m2, stats.m2)


def test_too_few_images_is_unavailable_not_an_error() -> None:
    one = FIDStats.from_features(np.ones((1, 8)))
    many = FIDStats.from_features(np.random.default_rng(6).normal(size=(10, 8)))
    result = fid_from_stats(one, many)
    assert isinstance(result, MetricUnavailable)
    assert "1 restored" in result.message and "\n" not in result.message
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="cannot merge"):
        one.merge(FIDStats.empty(4))
