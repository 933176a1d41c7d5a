"""The conformal calibration of sample spread: scores, the quantile, coverage numbers, the calibration file."""

import json
import math
from pathlib import Path

import fsspec
import numpy as np
import pytest

from diffpir_core.uncertainty import Calibration, load_calibration, write_calibration
from diffpir_core.uncertainty.calibration import (
    STD_FLOOR,
    calibration_mismatch,
    calibration_split,
    coverage_summary,
    fit_scale,
    image_score,
    required_calibration_images,
    split_average,
)

IDENTITY = {
    "task": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
    "prior": "demo",
    "method": "diffpir",
    "sampler": {"iter_num": 20, "zeta": 0.3, "lambda_": 7.0},
    "samples": 8,
    "estimate": "mean",
    "precision": "fp32",
}


def calibration(**changes) -> Calibration:
    return Calibration(scale=2.5, alpha=0.1, delta=0.1, n_calibration=30, **{**IDENTITY, **changes})


# --- the split ---------------------------------------------------------------------------------------------------


def test_split_is_stable_and_takes_the_fraction() -> None:
    ids = [f"photos/{i:05d}.png" for i in range(20000)]
    chosen = [calibration_split(i) for i in ids]
    assert chosen == [calibration_split(i, 0.25, 0) for i in ids]  # the defaults
    share = np.mean(chosen)
    assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(ids))  # binomial: 4 standard errors
    assert [calibration_split(i, 0.25, seed=1) for i in ids] != chosen  # the seed reshuffles
    # a stable hash (not Python's salted hash()): the value on every machine
    assert [calibration_split(f"img{i}") for i in range(8)] == [calibration_split(f"img{i}") for i in range(8)]
    assert not any(calibration_split(i, 0.0) for i in ids[:100]) and all(calibration_split(i, 1.0) for i in ids[:100])
    with pytest.raises(ValueError, match="fraction"):
        calibration_split("a", 1.5)


def test_split_fixed_values() -> None:
    """Membership is sha256("0\\0" + id) as a fraction of 2^64 (a.png 0.612, b.png 0.009, c.png 0.176, d.png 0.890,
    e.png 0.572, f.png 0.064): the same on any machine, Python and shard layout."""
    names = ("a.png", "b.png", "c.png", "d.png", "e.png", "f.png")
    assert [calibration_split(name) for name in names] == [False, True, True, False, False, True]
    assert [calibration_split(name, 0.6) for name in names] == [False, True, True, False, True, True]


# --- the image score ---------------------------------------------------------------------------------------------


def test_image_score_is_the_smallest_covering_scale() -> None:
    rng = np.random.default_rng(0)
    err = np.abs(rng.normal(size=(3, 10, 10)))
    std = rng.uniform(0.5, 2.0, size=(3, 10, 10))
    ratios = (err / std).ravel()
    for alpha, allowed_out in ((0.05, 15), (0.1, 30), (0.29, 87), (0.5, 150)):  # of 300 pixels
        s = image_score(err, std, alpha)
        assert np.count_nonzero(ratios > s) <= allowed_out  # at least 1 - alpha covered at s
        assert np.count_nonzero(ratios >= s) > allowed_out  # and not at any smaller scale


def test_image_score_counts_exactly_at_decimal_alpha() -> None:
    """0.29 * 100 is 28.999999999999996 in binary floats; the score must allow 29 miscovered pixels, not 28."""
    ratios = np.arange(1, 101, dtype=np.float64)  # pixel i has |err|/std = i
    assert image_score(ratios, np.ones(100), 0.29) == 71.0
    assert image_score(ratios, np.ones(100), 0.1) == 90.0


def test_zero_std_pixels_with_zero_error_are_covered() -> None:
    err = np.zeros((1, 4, 4))
    std = np.zeros((1, 4, 4))
    err[0, 0, :2], std[0, 0, :2] = 0.1, 0.1  # two uncertain pixels, error one std
    assert image_score(err, std, 0.1) == 1.0  # not inf or nan: the 14 pinned pixels score 0
    err[0, 3, 3] = 0.01  # a pinned pixel that is wrong scores error / floor
    assert image_score(err, std, 0.01) == pytest.approx(0.01 / STD_FLOOR)


def test_image_score_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same image"):
        image_score(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        image_score(np.full((2, 2), np.nan), np.ones((2, 2)), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        image_score(np.ones((2, 2)), np.ones((2, 2)), 1.0)


# --- the conformal quantile --------------------------------------------------------------------------------------


def test_fit_scale_takes_the_conformal_rank() -> None:
    scores = np.random.default_rng(1).permutation(np.arange(1.0, 20.0))  # 19 scores 1..19
    assert fit_scale(scores, 0.1) == 18.0  # ceil(20 * 0.9) = 18
    assert fit_scale(scores, 0.05) == 19.0  # ceil(20 * 0.95) = 19
    assert fit_scale(np.arange(1.0, 10.0), 0.1) == 9.0  # n = 9: ceil(10 * 0.9) = 9, the largest


def test_fit_scale_says_how_many_images_are_needed() -> None:
    assert required_calibration_images(0.1) == 9
    assert required_calibration_images(0.05) == 19
    with pytest.raises(ValueError, match="at least 9 calibration images, got 8"):
        fit_scale(np.arange(8.0), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        fit_scale([1.0, float("nan")] * 10, 0.1)


def test_split_conformal_coverage_is_within_its_bounds() -> None:
    """Over many exchangeable draws the covered fraction lies in [1 - δ, 1 - δ + 1/(n + 1)] up to Monte-Carlo error."""
    rng = np.random.default_rng(2)
    n, delta, trials = 19, 0.1, 4000
    hits = 0
    for _ in range(trials):
        draws = rng.exponential(size=n + 1)
        hits += draws[-1] <= fit_scale(draws[:-1], delta)
    rate = hits / trials
    margin = 4 * math.sqrt(0.1 * 0.9 / trials)
    assert 1 - delta - margin <= rate <= 1 - delta + 1 / (n + 1) + margin


def test_split_average_estimates_the_expected_coverage() -> None:
    scores = np.random.default_rng(3).lognormal(size=200)
    result = split_average(scores, 0.25, 0.1, splits=2000)
    n_cal = result["n_calibration"]
    assert (n_cal, result["n_test"]) == (50, 150)
    expected = math.ceil((n_cal + 1) * 0.9) / (n_cal + 1)  # exact for tie-free exchangeable scores
    sem = result["std_image_coverage"] / math.sqrt(result["splits"])
    assert abs(result["mean_image_coverage"] - expected) < 5 * sem + 1e-3
    assert result["target"] == {"image_coverage": 0.9, "image_coverage_upper": pytest.approx(0.9 + 1 / 51)}
    with pytest.raises(ValueError, match="no calibration or no test"):
        split_average(scores[:2], 0.25, 0.1)


# --- the coverage summary ----------------------------------------------------------------------------------------


def test_coverage_summary_numbers() -> None:
    std = [np.full((1, 2, 5), 0.1), np.full((1, 2, 5), 0.2)]
    err = [np.linspace(0.0, 0.3, 10).reshape(1, 2, 5), np.zeros((1, 2, 5))]
    summary = coverage_summary(err, std, scale=2.0, alpha=0.2, delta=0.1, n_calibration=9)
    # image 1: band 0.2, errors 0, .033, ..., .3: 7 of 10 inside (< 80 %); image 2: all inside
    assert summary["pixel_coverage"] == [0.7, 1.0]
    assert summary["image_coverage"] == 0.5
    assert summary["mean_pixel_coverage"] == pytest.approx(0.85)
    assert summary["mean_width"] == pytest.approx(2 * 2.0 * 0.15)
    assert summary["target"] == {"image_coverage": 0.9, "pixel_coverage": 0.8, "image_coverage_upper": 1.0}
    assert summary["n_images"] == 2
    corr = summary["std_error_correlation"]
    assert corr["pearson"] == pytest.approx(
        np.corrcoef(np.concatenate([s.ravel() for s in std]), np.concatenate([e.ravel() for e in err]))[0, 1]
    )
    json.dumps(summary, allow_nan=False)  # JSON-ready


def test_coverage_summary_agrees_with_image_scores() -> None:
    """An image counts as covered exactly when its score is ≤ the scale, the event fit_scale aims at."""
    rng = np.random.default_rng(4)
    errs = [np.abs(rng.normal(size=(3, 6, 6))) for _ in range(40)]
    stds = [rng.uniform(0.5, 1.5, size=(3, 6, 6)) for _ in range(40)]
    scores = np.array([image_score(e, s, 0.1) for e, s in zip(errs, stds, strict=True)])
    for scale in np.sort(scores)[::7]:
        summary = coverage_summary(errs, stds, float(scale), 0.1, 0.1)
        assert summary["image_coverage"] == np.mean(scores <= scale)


def test_coverage_summary_constant_std_has_no_correlation() -> None:
    summary = coverage_summary([np.ones((2, 2))], [np.ones((2, 2))], 1.0, 0.1, 0.1)
    assert summary["std_error_correlation"] == {"pearson": None, "spearman": None}
    with pytest.raises(ValueError, match="no test images"):
        coverage_summary([], [], 1.0, 0.1, 0.1)


# --- the calibration file ----------------------------------------------------------------------------------------


def test_calibration_file_round_trip_local_and_s3(tmp_path: Path, s3_options: dict) -> None:
    cal = calibration()
    write_calibration(str(tmp_path / "sub" / "calibration.json"), cal)
    assert load_calibration(str(tmp_path / "sub" / "calibration.json")) == cal
    fsspec.filesystem("s3", **s3_options).mkdir("calibration-bucket")
    write_calibration("s3://calibration-bucket/job/calibration.json", cal, s3_options)
    assert load_calibration("s3://calibration-bucket/job/calibration.json", s3_options) == cal


def test_calibration_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=f"{missing} does not exist: fix uncertainty.calibration"):
        load_calibration(str(missing))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_bytes(b"{not json")
    with pytest.raises(ValueError, match=f"{corrupt} is not JSON"):
        load_calibration(str(corrupt))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"scale": 1.0}))
    with pytest.raises(ValueError, match=f"{other} is not a diffpir calibration file"):
        load_calibration(str(other))
    wrong = tmp_path / "wrong.json"
    data = json.loads(calibration().model_dump_json())
    wrong.write_text(json.dumps({**data, "scale": -1.0, "schema_version": 7}))
    with pytest.raises(ValueError, match=f"{wrong} does not match calibration schema 1 .*schema_version.*scale"):
        load_calibration(str(wrong))


def test_mismatch_names_each_field_with_both_values() -> None:
    cal = calibration()
    assert calibration_mismatch(cal, IDENTITY) == []
    assert calibration_mismatch(cal, {**IDENTITY, "sampler": {**IDENTITY["sampler"], "iter_num": 20.0}}) == []
    job = {
        **IDENTITY,
        "task": {**IDENTITY["task"], "noise_sigma": 0.1},
        "prior": "ffhq",
        "samples": 4,
        "sampler": {"iter_num": 20, "zeta": 0.3, "lambda_": 7.0, "eta": 0.5},
    }
    assert calibration_mismatch(cal, job) == [
        'prior: calibrated "demo", job "ffhq"',
        "sampler.eta: calibrated the default (not set), job 0.5",
        "samples: calibrated 8, job 4",
        "task.noise_sigma: calibrated 0.05, job 0.1",
    ]
    without = {key: value for key, value in IDENTITY.items() if key != "estimate"}
    assert calibration_mismatch(cal, without) == ['estimate: calibrated "mean", job the default (not set)']
