"""Blind (no-reference) image quality: NIQE (Mittal, Soundararajan & Bovik, IEEE SPL 2013) and PIQE.

NIQE is the distance between a multivariate Gaussian fitted to an image's natural-scene statistics and one
fitted to pristine natural photos (the LIVE model of the authors' release, ``data/niqe_live.npz``); lower is
more natural. This is a port of the authors' MATLAB code (``niqe_release``): luma as MATLAB ``rgb2gray``,
MSCN coefficients with a 7×7 Gaussian (σ = 7/6, replicated border), 18 features of AGGD fits per 96×96 block (and
per 48×48 block of the MATLAB bicubic half-size image, the second scale), ``nanmean``/``nancov`` over
blocks, and the Mahalanobis-like distance with ``pinv`` of the averaged covariances.

PIQE (Venkatanath et al., NCC 2015) needs no trained model: the share of spatially active 16×16 blocks of
the MSCN image that show blockiness or noise, in 0–100, following MATLAB ``piqe``. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.linalg import pinv
from scipy.ndimage import correlate1d
from scipy.special import gamma

from diffpir_core.metrics.batch import BatchScores
from diffpir_core.metrics.unavailable import MetricUnavailable
from diffpir_core.operators.resize import imresize

NIQE_BLOCK = 96  # block side at the first scale; the second scale uses NIQE_BLOCK // 2 on the half-size image
NIQE_MIN_BLOCKS = 2  # blocks with features needed for a covariance
NIQE_FEATURES = 36  # 18 per scale
PIQE_BLOCK = 16
PIQE_ACTIVITY = 0.1  # MSCN block variance above which a block is spatially active (salient)
PIQE_FLAT_SEGMENT = 0.1  # an edge segment with a smaller MSCN std marks a block with a noticeable artefact
PIQE_SEGMENT = 6  # pixels per edge segment
# |I − μ| below this (in gray levels) is rounding noise of a flat neighbourhood: the noise of sums of 0–255
# values is ~1e-13, the smallest real contrast of an 8-bit image (one level at the window's corner) ~1e-4.
_FLAT = 1e-9
_PARAMETERS = Path(__file__).with_name("data") / "niqe_live.npz"
_GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])  # MATLAB rgb2gray
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # MATLAB circshift offsets: horizontal, vertical, two diagonals
_GAMMA_GRID = np.arange(200, 10001, dtype=np.float64) / 1000.0  # MATLAB 0.2:0.001:10
_GAMMA_RATIO = gamma(2.0 / _GAMMA_GRID) ** 2 / (gamma(1.0 / _GAMMA_GRID) * gamma(3.0 / _GAMMA_GRID))


def niqe(image_u8: np.ndarray) -> float | MetricUnavailable:
    """NIQE of one uint8 image, (H, W, 3) RGB or (H, W) gray; lower is more natural (about 2–4 for clean photos).

    Unavailable (with the reason) when the image holds fewer than two 96×96 blocks, or fewer than two blocks
    with any contrast (flat synthetic images), since the image's covariance needs two blocks.
    """
    gray = luma_u8(image_u8)
    height, width = gray.shape
    blocks = (height // NIQE_BLOCK) * (width // NIQE_BLOCK)
    if blocks < NIQE_MIN_BLOCKS:
        return MetricUnavailable(
            "niqe",
            f"a {height}x{width} image holds {blocks} whole {NIQE_BLOCK}x{NIQE_BLOCK} blocks, NIQE needs "
            f"{NIQE_MIN_BLOCKS} (at least {NIQE_BLOCK}x{NIQE_BLOCK * NIQE_MIN_BLOCKS})",
            "score a larger image (for SR, the degraded input is 1/scale of the output size)",
        )
    features = niqe_features(gray.astype(np.float64))
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < NIQE_MIN_BLOCKS:
        return MetricUnavailable(
            "niqe",
            f"only {len(complete)} of {blocks} blocks of the {height}x{width} image have contrast",
            "NIQE is undefined for flat images; use the full-reference metrics",
        )
    return niqe_distance(features)


def niqe_features(gray: np.ndarray) -> np.ndarray:
    """(blocks, 36) NIQE features of a float gray image in 0–255: 18 per 96×96 block, then 18 per half-size block.

    The image is cropped to whole blocks first (bottom and right remainder dropped, as the reference does).
    Computed in ``gray``'s float dtype.
    """
    rows, cols = gray.shape[0] // NIQE_BLOCK, gray.shape[1] // NIQE_BLOCK
    image = gray[: rows * NIQE_BLOCK, : cols * NIQE_BLOCK]
    half = imresize(torch.from_numpy(np.ascontiguousarray(image)), 0.5).numpy()
    scales = [_block_features(mscn(image), NIQE_BLOCK), _block_features(mscn(half), NIQE_BLOCK // 2)]
    return np.concatenate(scales, axis=1)


def niqe_distance(features: np.ndarray) -> float:
    """NIQE from block features: √(Δμᵀ·pinv((Σ_pristine + Σ_image)/2)·Δμ), NaN-aware like the reference.

    Δμ is the pristine mean minus the per-feature mean over blocks ignoring NaNs (MATLAB ``nanmean``); the
    image covariance uses the blocks without NaN (``nancov``, normalised by n − 1).
    """
    mu_pristine, cov_pristine = niqe_parameters()
    mu_image = np.nanmean(features, axis=0)
    cov_image = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
    matrix = (cov_pristine + cov_image) / 2
    inverse = pinv(matrix)  # cut-off max(size)·eps·largest singular value, as MATLAB pinv
    delta = mu_pristine - mu_image
    return float(np.sqrt(delta @ inverse @ delta))


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (I − μ)/(σ + 1), 7×7 Gaussian σ = 7/6, replicated border.

    Where the neighbourhood is flat, I − μ is rounding noise (about one ulp of the pixel value) whose signs
    would decide the AGGD fits; it is set to its exact value 0 so that the score does not depend on the
    summation order of the machine (MATLAB keeps its own noise there; docs/metrics.md).
    """
    taps = np.arange(-3, 4, dtype=image.dtype)
    window = np.exp(-(taps**2) / (2 * (7 / 6) ** 2))
    window /= window.sum()

    def local_mean(values: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(values, window, axis=0, mode="nearest"), window, axis=1, mode="nearest")

    mu = local_mean(image)
    sigma = np.sqrt(np.abs(local_mean(image * image) - mu * mu))
    centred = image - mu
    centred[np.abs(centred) < _FLAT] = 0
    return centred / (sigma + 1)


def aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit of each row of ``samples``: shape α (on the 0.2:0.001:10 grid), left and right scale.

    The reference's ``estimateaggdparam``; a row without negative (or positive) values gives NaN scales.
    """
    negative, positive = np.minimum(samples, 0), np.maximum(samples, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((negative**2).sum(axis=1) / (samples < 0).sum(axis=1))
        right = np.sqrt((positive**2).sum(axis=1) / (samples > 0).sum(axis=1))
        ratio = left / right
        r_hat = np.abs(samples).mean(axis=1) ** 2 / (samples**2).mean(axis=1)
        r_norm = r_hat * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    alpha = _GAMMA_GRID[np.argmin((_GAMMA_RATIO[None, :] - r_norm[:, None]) ** 2, axis=1)]
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * spread, right * spread


def _block_features(coefficients: np.ndarray, block: int) -> np.ndarray:
    """(blocks, 18) features of non-overlapping ``block``-sized tiles (row-major order over the tile grid)."""
    rows, cols = coefficients.shape[0] // block, coefficients.shape[1] // block
    tiles = coefficients.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(rows * cols, block, block)
    alpha, left, right = aggd_fit(tiles.reshape(len(tiles), -1))
    features = [alpha, (left + right) / 2]
    for shift in _SHIFTS:
        products = (tiles * np.roll(tiles, shift, axis=(1, 2))).reshape(len(tiles), -1)
        alpha, left, right = aggd_fit(products)
        mean = (right - left) * gamma(2 / alpha) / gamma(1 / alpha)
        features += [alpha, mean, left, right]
    return np.stack(features, axis=1)


@lru_cache(maxsize=1)
def niqe_parameters() -> tuple[np.ndarray, np.ndarray]:
    """The pristine model (mean (36,), covariance (36, 36)) of the NIQE release, trained on LIVE photos."""
    with np.load(_PARAMETERS) as stored:
        return stored["mu"].astype(np.float64), stored["cov"].astype(np.float64)


def luma_u8(image_u8: np.ndarray) -> np.ndarray:
    """uint8 gray of a uint8 (H, W, 3) RGB image like MATLAB ``rgb2gray`` (rounded half up); (H, W) passes through."""
    array = np.asarray(image_u8)
    if array.dtype != np.uint8:
        raise TypeError(f"image_u8 must be uint8 (quantise float images with float_to_uint8 first), got {array.dtype}")
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image_u8 must be (H, W, 3) RGB or (H, W) gray; got shape {array.shape}")
    return np.floor(array.astype(np.float64) @ _GRAY_WEIGHTS + 0.5).astype(np.uint8)


def piqe(image_u8: np.ndarray) -> float | MetricUnavailable:
    """PIQE of one uint8 image, (H, W, 3) RGB or (H, W) gray: 0 (no visible distortion) to 100; lower is better.

    MATLAB ``piqe``: gray scaled so its maximum is 255 and rounded; padded (symmetric, bottom and right) to whole
    16×16 blocks; MSCN as in NIQE. Of the active blocks (MSCN variance v > 0.1), one with a flat edge segment
    (6 pixels with std < 0.1) adds 1 − v, one whose centre/surround deviation signals noise adds v; the score is
    100·(Σ + 1)/(active blocks + 1), so a uniform image scores 100. Unavailable below 16×16 pixels.
    """
    gray = luma_u8(image_u8)
    height, width = gray.shape
    if min(height, width) < PIQE_BLOCK:
        return MetricUnavailable(
            "piqe",
            f"a {height}x{width} image is smaller than one {PIQE_BLOCK}x{PIQE_BLOCK} block",
            "score a larger image",
        )
    return piqe_score(gray.astype(np.float64))


def piqe_score(gray: np.ndarray) -> float:
    """PIQE of a float gray image in 0–255 (at least 16×16), computed in ``gray``'s float dtype."""
    height, width = gray.shape
    padded = np.pad(gray / 255, ((0, -height % PIQE_BLOCK), (0, -width % PIQE_BLOCK)), mode="symmetric")
    peak = padded.max()
    if peak == 0:
        return 100.0  # uniform: no active block
    coefficients = mscn(np.floor(255 * (padded / peak) + 0.5))  # MATLAB round: half away from zero
    rows, cols = coefficients.shape[0] // PIQE_BLOCK, coefficients.shape[1] // PIQE_BLOCK
    blocks = (
        coefficients.reshape(rows, PIQE_BLOCK, cols, PIQE_BLOCK)
        .transpose(0, 2, 1, 3)
        .reshape(-1, PIQE_BLOCK, PIQE_BLOCK)
    )
    variance = blocks.reshape(len(blocks), -1).var(axis=1, ddof=1)
    active = variance > PIQE_ACTIVITY
    edges = np.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], axis=1)
    impaired = (sliding_window_view(edges, PIQE_SEGMENT, axis=2).std(axis=3, ddof=1) < PIQE_FLAT_SEGMENT).any(
        axis=(1, 2)
    )
    sigma = np.sqrt(variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.nan_to_num(_centre_surround_ratio(blocks), nan=0.0, posinf=np.inf)
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
    noisy = sigma > 2 * beta
    distortion = np.where(impaired, 1 - variance, 0.0) + np.where(noisy, variance, 0.0)
    return float((distortion[active].sum() + 1) / (active.sum() + 1) * 100)


def _centre_surround_ratio(blocks: np.ndarray) -> np.ndarray:
    """std of the two centre columns over std of the rest, per block, with MATLAB ``piqe``'s column choice.

    The reference takes columns 8 and 9 (1-based) as the centre and deletes column 8, then column 9 of what
    remains (the original column 10), as the surround; both stds normalised by n − 1.
    """
    n = len(blocks)
    centre = blocks[:, :, 7:9].reshape(n, -1)
    surround = np.delete(blocks, [7, 9], axis=2).reshape(n, -1)
    return centre.std(axis=1, ddof=1) / surround.std(axis=1, ddof=1)


BLIND_SCORES = {"niqe": niqe, "piqe": piqe}
BLIND_METRICS = tuple(BLIND_SCORES)


def blind_scores(images_u8: np.ndarray | Sequence[np.ndarray], metrics: Sequence[str] = BLIND_METRICS) -> BatchScores:
    """No-reference scores of a batch of uint8 images ((N, H, W, 3) or a list of images of any size).

    A metric that cannot score an image (too small, flat) is NaN for that image; when it scores none of the
    batch it is reported under ``unavailable`` with the first image's reason instead.
    """
    if isinstance(images_u8, np.ndarray) and (images_u8.ndim != 4 or images_u8.shape[-1] != 3):
        raise ValueError(
            f"images_u8 must be a batch (N, H, W, 3) or a list of images, got an array of shape {images_u8.shape}; "
            "score one image with niqe(image)"
        )
    unknown = [name for name in metrics if name not in BLIND_METRICS]
    if unknown:
        raise ValueError(f"unknown blind metrics {unknown}; choose from {list(BLIND_METRICS)}")
    scores = BatchScores()
    for name in metrics:
        results = [BLIND_SCORES[name](image) for image in images_u8]
        if results and all(isinstance(result, MetricUnavailable) for result in results):
            scores.unavailable[name] = results[0]
        else:
            scores.values[name] = np.array([np.nan if isinstance(r, MetricUnavailable) else r for r in results])
    return scores
