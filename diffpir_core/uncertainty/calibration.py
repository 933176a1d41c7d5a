"""Calibrated per-pixel uncertainty: a conformal scale for the spread of K posterior samples.

The spread (per-pixel standard deviation) of K restorations with different seeds shows where the measurement does not
pin the image down, but its size is not a confidence: a sampler that under- or over-disperses, a prior that does not
fit the photos, or a small K all change it. Calibration fits one number, the scale q̂, on images with ground truth so
that the band ``estimate ± q̂·std`` carries a stated guarantee on new images (docs/uncertainty.md):

    Split conformal prediction on the per-image scores ``S = image_score(|error|, std, α)`` (the smallest scale at
    which at least 1 − α of the image's pixels lie inside the band). With n calibration images and
    ``q̂ = fit_scale(scores, δ)``, for a new image exchangeable with the calibration images,
    P(at least 1 − α of its pixels lie in estimate ± q̂·std) ≥ 1 − δ, marginally over the calibration and the test
    draw, and ≤ 1 − δ + 1/(n + 1) when the scores have no ties. This is conformal risk control of the event "more
    than α of the image's pixels miscovered".

Fractions are computed exactly from the decimal value of α and δ (``0.1`` is one tenth, not the binary float below
it), so the pixel counts and the quantile index are the ones the guarantee names.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal

import fsspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats

from diffpir_core import __version__
from diffpir_core.io.uris import StorageOptions, put_atomic, redact_uri

STD_FLOOR = 1e-6
"""The smallest std a score divides by, on the [0, 1] pixel scale. A pixel the sampler pins down (std 0, e.g. a known
pixel of noiseless inpainting) with zero error then scores 0 and counts as covered, while one with an error scores
``error / 1e-6`` (miscovered at any sensible scale). 1e-6 is far below one 8-bit step (1/255 ≈ 3.9e-3) and above the
float32 rounding of values in [0, 1] (6e-8)."""

CALIBRATION_FORMAT = "diffpir-calibration"
CALIBRATION_SCHEMA = 1
IDENTITY_FIELDS = ("task", "prior", "method", "sampler", "samples", "estimate", "precision")
"""What a calibration is valid for: a job whose values of these differ gets :func:`calibration_mismatch` lines."""


def _fraction(value: float, name: str) -> Fraction:
    """``value`` as the exact fraction of its shortest decimal form; ValueError unless 0 < value < 1."""
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return Fraction(repr(float(value)))


def calibration_split(image_id: str, fraction: float = 0.25, seed: int = 0) -> bool:
    """Whether ``image_id`` belongs to the calibration split: sha256 of ``seed`` and the id mapped to [0, 1).

    The same id lands on the same side on every machine, shard layout and run, and about ``fraction`` of any large
    set of ids are calibration images. ``fraction`` 0 or 1 puts none or all of them there.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"calibration fraction must lie in [0, 1], got {fraction!r}")
    digest = hashlib.sha256(f"{seed}\0{image_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _ratios(abs_error: np.ndarray, std: np.ndarray) -> np.ndarray:
    """|error| / max(std, STD_FLOOR) over every pixel and channel, float64; ValueError on shape or value errors."""
    err = np.asarray(abs_error, dtype=np.float64)
    sd = np.asarray(std, dtype=np.float64)
    if err.shape != sd.shape:
        raise ValueError(f"abs_error has shape {err.shape} and std {sd.shape}: pass arrays of the same image")
    if err.size == 0:
        raise ValueError("abs_error is empty: pass the image's per-pixel absolute error")
    if not (np.isfinite(err).all() and np.isfinite(sd).all()):
        raise ValueError("abs_error or std holds NaN or infinity: check the restoration and the samples")
    if (err < 0).any() or (sd < 0).any():
        raise ValueError("abs_error and std must be non-negative: pass |estimate - truth| and a standard deviation")
    return (err / np.maximum(sd, STD_FLOOR)).ravel()


def _covered_needed(n_pixels: int, alpha: Fraction) -> int:
    """How many of ``n_pixels`` must be covered for "at least 1 − α covered": n − ⌊α·n⌋."""
    return n_pixels - math.floor(alpha * n_pixels)


def image_score(abs_error: np.ndarray, std: np.ndarray, alpha: float) -> float:
    """The smallest scale s at which at least 1 − α of the image's pixels (all channels) satisfy |err| ≤ s·std.

    std is floored at :data:`STD_FLOOR`. The image is covered at scale q̂ exactly when its score is ≤ q̂, which is
    what makes the conformal quantile of these scores a guarantee on the covered fraction.
    """
    ratios = _ratios(abs_error, std)
    needed = _covered_needed(ratios.size, _fraction(alpha, "alpha"))
    if needed == 0:
        return 0.0
    return float(np.partition(ratios, needed - 1)[needed - 1])


def _quantile_rank(n: int, delta: Fraction) -> int:
    """⌈(n + 1)(1 − δ)⌉: the rank of the split-conformal quantile among n scores."""
    return math.ceil((n + 1) * (1 - delta))


def required_calibration_images(delta: float) -> int:
    """The fewest calibration images for which :func:`fit_scale` has a finite quantile: ⌈(1 − δ)/δ⌉ (9 for 0.1)."""
    d = _fraction(delta, "delta")
    return math.ceil((1 - d) / d)


def fit_scale(scores: Sequence[float], delta: float) -> float:
    """Split-conformal scale q̂: the ⌈(n + 1)(1 − δ)⌉-th smallest of the n calibration scores.

    ValueError, saying how many calibration images δ needs, when that rank exceeds n (the band would be infinite).
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise ValueError("calibration scores hold NaN or infinity: check the calibration images' errors and stds")
    n = values.size
    rank = _quantile_rank(n, _fraction(delta, "delta"))
    if rank > n:
        raise ValueError(
            f"delta={delta} needs at least {required_calibration_images(delta)} calibration images, got {n}: "
            "add images with ground truth, raise the calibration fraction, or raise delta"
        )
    return float(np.partition(values, rank - 1)[rank - 1])


def _correlations(stds: np.ndarray, errors: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman correlation of std and |error| over pooled pixels (None where one of them is constant)."""
    if stds.size < 2 or np.ptp(stds) == 0 or np.ptp(errors) == 0:
        return {"pearson": None, "spearman": None}
    return {
        "pearson": float(np.corrcoef(stds, errors)[0, 1]),
        "spearman": float(stats.spearmanr(stds, errors).statistic),
    }


def coverage_summary(
    abs_errors: Sequence[np.ndarray],
    stds: Sequence[np.ndarray],
    scale: float,
    alpha: float,
    delta: float,
    *,
    n_calibration: int | None = None,
) -> dict[str, Any]:
    """How the band ``estimate ± scale·std`` does on test images (not the calibration images), as JSON-ready values.

    Keys: ``n_images``; ``pixel_coverage`` (per image, the covered fraction of its pixels); ``image_coverage`` (the
    fraction of images with at least 1 − α covered; the guarantee is about its expectation, target ≥ 1 − δ);
    ``mean_pixel_coverage``; ``mean_width`` (mean of 2·scale·std over pooled pixels, [0, 1] scale);
    ``std_error_correlation`` (``pearson``, ``spearman`` over pooled pixels, None when undefined); ``target``
    (``image_coverage`` 1 − δ, ``image_coverage_upper`` 1 − δ + 1/(n + 1) when ``n_calibration`` is given, and
    ``pixel_coverage`` 1 − α, the per-image level); ``scale``, ``alpha``, ``delta``.
    """
    if len(abs_errors) != len(stds):
        raise ValueError(f"{len(abs_errors)} error arrays but {len(stds)} std arrays: pass one of each per image")
    if not abs_errors:
        raise ValueError("no test images: coverage needs at least one image with ground truth outside calibration")
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number ≥ 0, got {scale!r}")
    a = _fraction(alpha, "alpha")
    d = _fraction(delta, "delta")
    pixel_coverage, covered_images = [], 0
    for err, sd in zip(abs_errors, stds, strict=True):
        ratios = _ratios(err, sd)
        covered = int(np.count_nonzero(ratios <= scale))
        pixel_coverage.append(covered / ratios.size)
        covered_images += covered >= _covered_needed(ratios.size, a)
    pooled_std = np.concatenate([np.asarray(sd, dtype=np.float64).ravel() for sd in stds])
    pooled_err = np.concatenate([np.asarray(err, dtype=np.float64).ravel() for err in abs_errors])
    target: dict[str, float] = {"image_coverage": float(1 - d), "pixel_coverage": float(1 - a)}
    if n_calibration is not None:
        target["image_coverage_upper"] = float(1 - d + Fraction(1, n_calibration + 1))
    return {
        "n_images": len(abs_errors),
        "scale": float(scale),
        "alpha": float(alpha),
        "delta": float(delta),
        "pixel_coverage": pixel_coverage,
        "image_coverage": covered_images / len(abs_errors),
        "mean_pixel_coverage": float(np.mean(pixel_coverage)),
        "mean_width": float(2 * scale * pooled_std.mean()),
        "std_error_correlation": _correlations(pooled_std, pooled_err),
        "target": target,
    }


def split_average(
    scores: Sequence[float], fraction: float, delta: float, *, splits: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Image coverage averaged over ``splits`` random calibration/test splits of the same per-image scores.

    One split's coverage is a noisy draw around its expectation; the average over many splits removes that noise.
    With distinct scores the expectation over random splits is ⌈(n + 1)(1 − δ)⌉/(n + 1) for n calibration images
    whatever the scores are (the held-out image's rank among n + 1 randomly chosen ones is uniform), so the average
    checks the procedure and shows the split-to-split spread; it cannot show that new images are exchangeable with
    these. Returns ``mean_image_coverage``, ``std_image_coverage`` (across splits), ``mean_scale``,
    ``splits``, ``n_calibration``, ``n_test`` and ``target`` (``image_coverage`` and ``image_coverage_upper``).
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    n_cal = round(fraction * values.size)
    if not 0 < n_cal < values.size:
        raise ValueError(
            f"a {fraction:.0%} split of {values.size} scores leaves no calibration or no test image: pass more scores"
        )
    rng = np.random.default_rng(seed)
    coverage, scales = np.empty(splits), np.empty(splits)
    for i in range(splits):
        order = rng.permutation(values.size)
        scales[i] = fit_scale(values[order[:n_cal]], delta)
        coverage[i] = np.mean(values[order[n_cal:]] <= scales[i])
    d = _fraction(delta, "delta")
    return {
        "mean_image_coverage": float(coverage.mean()),
        "std_image_coverage": float(coverage.std()),
        "mean_scale": float(scales.mean()),
        "splits": splits,
        "n_calibration": n_cal,
        "n_test": values.size - n_cal,
        "target": {"image_coverage": float(1 - d), "image_coverage_upper": float(1 - d + Fraction(1, n_cal + 1))},
    }


class Calibration(BaseModel):
    """A fitted calibration: the scale q̂ and what it is valid for (the job identity it was fitted on)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["diffpir-calibration"] = CALIBRATION_FORMAT
    schema_version: Literal[1] = CALIBRATION_SCHEMA
    scale: float = Field(ge=0, allow_inf_nan=False, description="q̂: the band is estimate ± scale·std")
    alpha: float = Field(gt=0, lt=1, description="at most this fraction of an image's pixels may lie outside")
    delta: float = Field(gt=0, lt=1, description="the chance that an image has more than alpha outside")
    n_calibration: int = Field(ge=1, description="calibration images the scale was fitted on")
    task: dict[str, Any] = Field(description="the task identity (operator, noise, kernel/mask digests)")
    prior: str
    method: str
    sampler: dict[str, Any] = Field(description="the resolved sampler configuration")
    samples: int = Field(ge=2, description="K: posterior samples per image")
    estimate: Literal["mean", "first"]
    precision: str = "fp32"
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    diffpir_version: str = __version__

    def identity(self) -> dict[str, Any]:
        """The fields a job must match to use this calibration (:data:`IDENTITY_FIELDS`)."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}


def write_calibration(path_or_uri: str, cal: Calibration, storage_options: StorageOptions | None = None) -> None:
    """Write ``cal`` as JSON to a local path or fsspec URI (atomically: readers see the old or the whole new file)."""
    fs, path = fsspec.core.url_to_fs(path_or_uri, **dict(storage_options or {}))
    put_atomic(fs, path, (cal.model_dump_json(indent=2) + "\n").encode())


def load_calibration(path_or_uri: str, storage_options: StorageOptions | None = None) -> Calibration:
    """The calibration in ``path_or_uri``; ValueError naming the file and what to do when it is missing, not JSON,
    or not a calibration file of this version."""
    name = redact_uri(path_or_uri)
    try:
        with fsspec.open(path_or_uri, "rb", **dict(storage_options or {})) as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        raise ValueError(
            f"calibration file {name} does not exist: fix uncertainty.calibration, or run an evaluate-mode job "
            "with uncertainty to fit one"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"calibration file {name} is not JSON ({err}): point uncertainty.calibration at the calibration.json "
            "an evaluate-mode job wrote"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise ValueError(
            f'{name} is not a diffpir calibration file (no "format": "{CALIBRATION_FORMAT}"): point '
            "uncertainty.calibration at the calibration.json an evaluate-mode job wrote"
        )
    try:
        return Calibration.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in err.errors())
        raise ValueError(
            f"calibration file {name} does not match calibration schema {CALIBRATION_SCHEMA} ({problems}): refit it "
            "with an evaluate-mode job of this version"
        ) from None


_ABSENT = object()


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Nested mappings as ``{"a.b": leaf}`` (a non-mapping value is one leaf under ``prefix``)."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _shown(value: Any) -> str:
    return "the default (not set)" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def calibration_mismatch(cal: Calibration, identity: Mapping[str, Any]) -> list[str]:
    """One line per field where the job's ``identity`` differs from the calibration's, with both values
    (``task.noise_sigma: calibrated 0.05, job 0.1``); empty when the calibration applies.

    ``identity`` holds the job's values of :data:`IDENTITY_FIELDS`; nested dicts (task, sampler) compare leaf by leaf
    and a field on one side only counts as a difference. Numbers compare by value (1 and 1.0 are equal).
    """
    ours = _flatten(cal.identity(), "")
    theirs = _flatten({name: identity.get(name, _ABSENT) for name in IDENTITY_FIELDS}, "")
    lines = []
    for key in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(key, _ABSENT), theirs.get(key, _ABSENT)
        if a is _ABSENT or b is _ABSENT or a != b:
            lines.append(f"{key}: calibrated {_shown(a)}, job {_shown(b)}")
    return lines
