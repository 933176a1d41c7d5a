"""NIQE and PIQE against a reference implementation's values, their behaviour on degraded photos, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from scipy.ndimage import gaussian_filter

from diffpir_core.metrics import blind
from diffpir_core.metrics.blind import blind_scores, luma_u8, niqe, piqe
from diffpir_core.metrics.unavailable import MetricUnavailable
from diffpir_core.operators.resize import imresize

REFERENCE = json.loads(Path(__file__).with_name("blind_reference.json").read_text())


def _niqe_misses() -> dict[str, tuple[float, float]]:
    """Photo -> (|ours − reference|, bound) where ours is out of bound.

    The bound is this machine's sensitivity of the score to rounding: how far the same image's NIQE moves
    when the features are computed in float32 instead of float64 (~1e-5–1e-3; a float64 port that follows
    the reference agrees to ~1e-12).
    """
    misses = {}
    for name, expected in REFERENCE["niqe"].items():
        gray = luma_u8(getattr(skimage.data, name)())
        value = niqe(gray)
        bound = abs(blind.niqe_distance(blind.niqe_features(gray.astype(np.float32))) - value)
        if not abs(value - expected) <= bound:
            misses[name] = (abs(value - expected), bound)
    return misses


def _piqe_misses() -> dict[str, tuple[float, float]]:
    """Like :func:`_niqe_misses` for PIQE on the photos cropped to whole 16×16 blocks."""
    misses = {}
    for name, expected in REFERENCE["piqe"].items():
        photo = getattr(skimage.data, name)()
        photo = photo[: photo.shape[0] // 16 * 16, : photo.shape[1] // 16 * 16]
        value = piqe(photo)
        bound = abs(blind.piqe_score(luma_u8(photo).astype(np.float32)) - value)
        if not abs(value - expected) <= bound:
            misses[name] = (abs(value - expected), bound)
    return misses


def test_scores_match_the_reference_values() -> None:
    assert _niqe_misses() == {}
    assert _piqe_misses() == {}


def _second_scale_dropped(original):
    def features(gray: np.ndarray) -> np.ndarray:
        first = original(gray)[:, : blind.NIQE_FEATURES // 2]
        return np.concatenate([first, first], axis=1)

    return features


@pytest.mark.parametrize(
    ("target", "mutant"),
    [
        ("niqe_features", _second_scale_dropped(blind.niqe_features)),
        ("imresize", lambda x, scale: imresize(x, scale, antialias=False)),
        ("imresize", lambda x, scale: x[::2, ::2]),
        ("_SHIFTS", ((0, 1), (1, 0), (1, 1), (1, 1))),
    ],
    ids=["second scale dropped", "no antialiasing", "decimation", "one diagonal twice"],
)
def test_niqe_reference_check_fails_for_mutations(monkeypatch: pytest.MonkeyPatch, target: str, mutant) -> None:
    monkeypatch.setattr(blind, target, mutant)
    assert set(_niqe_misses()) == set(REFERENCE["niqe"])


def _surround_without_centre(blocks: np.ndarray) -> np.ndarray:
    centre = blocks[:, :, 7:9].reshape(len(blocks), -1)
    surround = np.delete(blocks, [7, 8], axis=2).reshape(len(blocks), -1)
    return centre.std(axis=1, ddof=1) / surround.std(axis=1, ddof=1)


@pytest.mark.parametrize(
    ("target", "mutant"),
    [("_centre_surround_ratio", _surround_without_centre), ("PIQE_SEGMENT", 5), ("PIQE_ACTIVITY", 0.11)],
    ids=["surround without the two centre columns", "5-pixel segments", "activity threshold 0.11"],
)
def test_piqe_reference_check_fails_for_mutations(monkeypatch: pytest.MonkeyPatch, target: str, mutant) -> None:
    monkeypatch.setattr(blind, target, mutant)
    assert set(_piqe_misses()) == set(REFERENCE["piqe"])


def test_luma_is_matlab_rgb2gray() -> None:
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [1, 1, 1]]], np.uint8)
    np.testing.assert_array_equal(luma_u8(primaries), [[76, 150, 29, 255, 1]])


def _degraded(photo: np.ndarray, blur: float = 0.0, noise: float = 0.0) -> np.ndarray:
    image = gaussian_filter(photo.astype(np.float64), (blur, blur, 0)) if blur else photo.astype(np.float64)
    image = image + np.random.default_rng(0).normal(0, noise, photo.shape) if noise else image
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_niqe_grows_with_blur_and_noise() -> None:
    photo = skimage.data.coffee()
    blurred = [niqe(_degraded(photo, blur=sigma)) for sigma in (0, 1, 2, 3)]
    noisy = [niqe(_degraded(photo, noise=sigma)) for sigma in (0, 5, 10, 20)]
    assert np.all(np.diff(blurred) > 0), blurred
    assert np.all(np.diff(noisy) > 0), noisy
    assert 2 < blurred[0] < 5  # a clean photo scores in the range the NIQE paper reports for pristine images


def test_piqe_grows_with_blur_and_strong_noise() -> None:
    """PIQE rises with blur until no block is active (100), and with noise from σ = 10 on; mild noise
    (σ = 5) lowers it (docs/metrics.md)."""
    photo = skimage.data.coffee()
    blurred = [piqe(_degraded(photo, blur=sigma)) for sigma in (0, 1, 2, 3)]
    noisy = [piqe(_degraded(photo, noise=sigma)) for sigma in (10, 20, 40)]
    assert np.all(np.diff(blurred) > 0) and blurred[-1] == 100.0, blurred
    assert np.all(np.diff(noisy) > 0), noisy


@pytest.mark.parametrize("shape", [(96, 150, 3), (150, 150), (64, 64, 3)])
def test_images_below_two_niqe_blocks_are_unavailable(shape: tuple[int, ...]) -> None:
    result = niqe(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8))
    assert isinstance(result, MetricUnavailable)
    assert "96x96 blocks" in result.reason and f"{shape[0]}x{shape[1]}" in result.reason


def test_flat_images() -> None:
    flat = np.full((200, 300, 3), 128, np.uint8)
    flat[:, 150:] = 40
    result = niqe(flat)
    assert isinstance(result, MetricUnavailable) and "have contrast" in result.reason
    assert piqe(flat) == 100.0 and piqe(np.zeros((40, 40), np.uint8)) == 100.0  # MATLAB piqe: no active block


def test_piqe_sizes() -> None:
    photo = skimage.data.chelsea()
    assert isinstance(piqe(photo[:15, :100]), MetricUnavailable)
    assert 0 < piqe(photo[:16, :16]) <= 100
    assert 0 < piqe(photo) < 100  # 300x451: padded to 304x464


def test_bad_input_is_refused() -> None:
    for score in (niqe, piqe):
        with pytest.raises(TypeError, match="uint8"):
            score(np.zeros((200, 200, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
            score(np.zeros((200, 200, 4), np.uint8))


def test_blind_scores_of_a_batch() -> None:
    photo = skimage.data.astronaut()
    small = photo[:64, :64]
    scores = blind_scores(np.stack([photo[:256, :256], photo[256:, 256:]]))
    assert set(scores.values) == {"niqe", "piqe"} and not scores.unavailable
    assert scores.values["niqe"][0] == niqe(photo[:256, :256]) and scores.values["piqe"][1] == piqe(photo[256:, 256:])
    mixed = blind_scores([photo[:256, :256], small])
    assert np.isnan(mixed.values["niqe"][1]) and np.isfinite(mixed.values["piqe"]).all()
    none = blind_scores(np.stack([small, small]), metrics=("niqe",))
    assert none.values == {} and "64x64" in none.unavailable["niqe"].reason
    with pytest.raises(ValueError, match=r"batch \(N, H, W, 3\)"):
        blind_scores(photo)
    with pytest.raises(ValueError, match="unknown blind metrics"):
        blind_scores([photo], metrics=("brisque",))


def test_flat_neighbourhoods_give_exact_zero_coefficients() -> None:
    """Without the snap, 84 of the 256 gray levels leave rounding noise whose signs would steer the fits."""
    levels = np.arange(256, dtype=np.float64)[:, None, None] * np.ones((1, 48, 48))
    for level in levels:
        assert not blind.mscn(level).any()
        assert not blind.mscn(imresize(torch.from_numpy(level), 0.5).numpy()).any()
