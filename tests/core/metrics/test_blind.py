"""NIQE against a reference implementation's values, its behaviour on degraded photos, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from scipy.ndimage import gaussian_filter

from diffpir_core.metrics import blind
from diffpir_core.metrics.blind import blind_scores, luma_u8, niqe
from diffpir_core.metrics.unavailable import MetricUnavailable
from diffpir_core.operators.resize import imresize

REFERENCE = json.loads(Path(__file__).with_name("niqe_reference.json").read_text())["niqe"]


def _reference_misses() -> dict[str, tuple[float, float]]:
    """Photo -> (|ours − reference|, bound) where ours is out of bound.

    The bound is this machine's sensitivity of the score to rounding: how far the same image's NIQE moves
    when the features are computed in float32 instead of float64 (~1e-5–1e-3; a float64 port that follows
    the reference agrees to ~1e-12).
    """
    misses = {}
    for name, expected in REFERENCE.items():
        gray = luma_u8(getattr(skimage.data, name)())
        value = niqe(gray)
        bound = abs(blind.niqe_distance(blind.niqe_features(gray.astype(np.float32))) - value)
        if not abs(value - expected) <= bound:
            misses[name] = (abs(value - expected), bound)
    return misses


def test_niqe_matches_the_reference_values() -> None:
    assert _reference_misses() == {}


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
def test_reference_check_fails_for_mutations(monkeypatch: pytest.MonkeyPatch, target: str, mutant) -> None:
    monkeypatch.setattr(blind, target, mutant)
    assert set(_reference_misses()) == set(REFERENCE)


def test_luma_is_matlab_rgb2gray() -> None:
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [1, 1, 1]]], np.uint8)
    np.testing.assert_array_equal(luma_u8(primaries), [[76, 150, 29, 255, 1]])


def test_niqe_grows_with_blur_and_noise() -> None:
    photo = skimage.data.coffee().astype(np.float64)
    rng = np.random.default_rng(0)

    def score(image: np.ndarray) -> float:
        return niqe(np.clip(np.round(image), 0, 255).astype(np.uint8))

    blurred = [score(gaussian_filter(photo, (sigma, sigma, 0))) for sigma in (0, 1, 2, 3)]
    noisy = [score(photo + rng.normal(0, sigma, photo.shape)) for sigma in (0, 5, 10, 20)]
    assert np.all(np.diff(blurred) > 0), blurred
    assert np.all(np.diff(noisy) > 0), noisy
    assert 2 < blurred[0] < 5  # a clean photo scores in the range the NIQE paper reports for pristine images


@pytest.mark.parametrize("shape", [(96, 150, 3), (150, 150), (64, 64, 3)])
def test_images_below_two_blocks_are_unavailable(shape: tuple[int, ...]) -> None:
    result = niqe(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8))
    assert isinstance(result, MetricUnavailable)
    assert "96x96 blocks" in result.reason and f"{shape[0]}x{shape[1]}" in result.reason


def test_flat_images_are_unavailable() -> None:
    flat = np.full((200, 300, 3), 128, np.uint8)
    flat[:, 150:] = 40
    result = niqe(flat)
    assert isinstance(result, MetricUnavailable)
    assert "have contrast" in result.reason


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError, match="uint8"):
        niqe(np.zeros((200, 200, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        niqe(np.zeros((200, 200, 4), np.uint8))


def test_blind_scores_of_a_batch() -> None:
    photo = skimage.data.astronaut()
    small = photo[:64, :64]
    scores = blind_scores(np.stack([photo[:256, :256], photo[256:, 256:]]))
    assert scores.values["niqe"].shape == (2,) and np.isfinite(scores.values["niqe"]).all()
    assert scores.values["niqe"][0] == niqe(photo[:256, :256])
    mixed = blind_scores([photo[:256, :256], small])
    assert np.isnan(mixed.values["niqe"][1])
    none = blind_scores(np.stack([small, small]))
    assert none.values == {} and "64x64" in none.unavailable["niqe"].reason
    with pytest.raises(ValueError, match=r"batch \(N, H, W, 3\)"):
        blind_scores(photo)
    with pytest.raises(ValueError, match="unknown blind metrics"):
        blind_scores([photo], metrics=("piqe",))


def test_flat_neighbourhoods_give_exact_zero_coefficients() -> None:
    """Without the snap, 84 of the 256 gray levels leave rounding noise whose signs would steer the fits."""
    levels = np.arange(256, dtype=np.float64)[:, None, None] * np.ones((1, 48, 48))
    for level in levels:
        assert not blind.mscn(level).any()
        assert not blind.mscn(imresize(torch.from_numpy(level), 0.5).numpy()).any()
