"""FID (Heusel et al. 2017) with ``pytorch-fid`` 0.3.0 conventions, accumulated shard by shard.

Features: the 2048-d pool3 activations of pytorch-fid's ``InceptionV3`` (TF-ported FID weights), fed
float images in [0, 1] — what its folder loader gives for PNGs of our uint8 outputs — resized to 299²
bilinearly and mapped to [−1, 1] inside the network. Statistics: mean and unbiased covariance
(``np.cov``). The distance: ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½.

Datasets are sharded, so :class:`FIDStats` holds (count, mean, scatter matrix) and merges exactly
(Chan et al.'s pairwise update): per-shard statistics combine into the dataset's in any order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch

from diffpir_core.metrics.unavailable import (
    INSTALL_FIX,
    MetricUnavailable,
    import_optional,
    missing_weights,
)

FEATURE_DIM = 2048
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"

_LOADED: dict[str, InceptionFeatures] = {}


@dataclass
class FIDStats:
    """Streaming feature statistics: ``count`` samples, their ``mean`` and scatter ``m2`` = Σ (f−μ)(f−μ)ᵀ."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int = FEATURE_DIM) -> FIDStats:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def from_features(cls, features: np.ndarray) -> FIDStats:
        """Statistics of an (N, D) feature matrix."""
        feats = np.asarray(features, dtype=np.float64)
        if feats.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {feats.shape}")
        if feats.shape[0] == 0:
            return cls.empty(feats.shape[1])
        mean = feats.mean(axis=0)
        centred = feats - mean
        return cls(feats.shape[0], mean, centred.T @ centred)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by count − 1, as ``np.cov`` in pytorch-fid)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, these statistics hold {self.count}")
        return self.m2 / (self.count - 1)

    def merge(self, other: FIDStats) -> FIDStats:
        """Statistics of the union of both sample sets (exact, order-independent up to rounding)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {self.dim}-d statistics with {other.dim}-d ones")
        if other.count == 0:
            return FIDStats(self.count, self.mean.copy(), self.m2.copy())
        if self.count == 0:
            return FIDStats(other.count, other.mean.copy(), other.m2.copy())
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.count * other.count / count)
        return FIDStats(count, mean, m2)

    def update(self, features: np.ndarray) -> None:
        """Add an (N, D) batch of features in place."""
        merged = self.merge(FIDStats.from_features(features))
        self.count, self.mean, self.m2 = merged.count, merged.mean, merged.m2

    def to_bytes(self) -> bytes:
        """An ``.npz`` payload (float64; D = 2048 makes it 32 MiB — per-shard features are smaller)."""
        buffer = io.BytesIO()
        np.savez(buffer, count=np.int64(self.count), mean=self.mean, m2=self.m2)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> FIDStats:
        with np.load(io.BytesIO(payload)) as data:
            return cls(int(data["count"]), data["mean"], data["m2"])

    def save(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        """Write the statistics to a local path or fsspec URI (e.g. ``s3://…/fid_restored.npz``)."""
        with fsspec.open(uri, "wb", **(storage_options or {})) as handle:
            handle.write(self.to_bytes())

    @classmethod
    def load(cls, uri: str, storage_options: dict[str, Any] | None = None) -> FIDStats:
        with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
            return cls.from_bytes(handle.read())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of N(μ₁, Σ₁) and N(μ₂, Σ₂).

    tr (Σ₁Σ₂)^½ is computed as Σ √eig(Σ₁^½ Σ₂ Σ₁^½) — the same value as pytorch-fid's
    ``sqrtm(Σ₁Σ₂)`` (similar matrices), but through symmetric eigendecompositions, which stay real and
    finite for the rank-deficient covariances of small sample sets.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched statistics: means {mu1.shape}/{mu2.shape}, covariances {sigma1.shape}/{sigma2.shape}"
        )
    root1 = _psd_sqrt(sigma1)
    product = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid_from_stats(restored: FIDStats, reference: FIDStats) -> float | MetricUnavailable:
    """FID between two accumulated feature sets, or why it cannot be computed (fewer than 2 images)."""
    if min(restored.count, reference.count) < 2:
        return MetricUnavailable(
            "FID",
            f"needs at least 2 images per set, got {restored.count} restored and {reference.count} reference",
            "evaluate more images (FID is only meaningful over hundreds)",
        )
    return frechet_distance(restored.mean, restored.cov, reference.mean, reference.cov)


class InceptionFeatures:
    """pytorch-fid's pool3 feature extractor on one device."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        self.network = network
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) float images in [0, 1] -> float64 (B, 2048) features."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
        pooled = self.network(images.to(self.device, torch.float32))[0]
        return pooled.reshape(images.shape[0], -1).double().cpu().numpy()


def load_inception(
    device: str | torch.device = "cpu", *, allow_download: bool = False
) -> InceptionFeatures | MetricUnavailable:
    """pytorch-fid's InceptionV3 (pool3) on ``device``, or why it cannot be built here (never raises)."""
    device = torch.device(device)
    if str(device) in _LOADED:
        return _LOADED[str(device)]
    module = import_optional("FID", "pytorch_fid.inception")
    if isinstance(module, MetricUnavailable):
        return module
    if not allow_download and (missing := missing_weights("FID", INCEPTION_FILE, INCEPTION_URL)):
        return missing
    try:
        block = module.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]
        network = module.InceptionV3([block]).eval().to(device)
    except Exception as error:
        return MetricUnavailable("FID", f"building pytorch-fid's InceptionV3 failed ({error})", INSTALL_FIX)
    extractor = InceptionFeatures(network, device)
    _LOADED[str(device)] = extractor
    return extractor


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T
