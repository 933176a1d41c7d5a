"""Image-quality metrics with the DiffPIR reference conventions (docs/algorithm.md §9); see docs/metrics.md.

* PSNR / SSIM on uint8 RGB (border crop, optional BT.601 Y channel): :func:`psnr`, :func:`ssim`.
* LPIPS-VGG and FID (pytorch-fid): optional (the ``metrics`` extra plus cached backbone weights);
  :func:`load_lpips` / :func:`load_inception` return :class:`MetricUnavailable` instead of raising.
* :class:`FIDStats`: streaming, mergeable feature statistics for sharded datasets.
* :func:`measurement_rms`: ‖y − A(x̂)‖ RMS, the no-reference check of restore mode.
* :func:`niqe`, :func:`piqe`, :func:`blind_scores`: blind (no-reference) quality scores for restore mode.
"""

from diffpir_core.metrics.batch import BatchScores, score_batch
from diffpir_core.metrics.blind import BLIND_METRICS, blind_scores, niqe, piqe
from diffpir_core.metrics.consistency import measurement_rms
from diffpir_core.metrics.convert import crop_border, float_to_uint8, rgb_to_y_uint8, uint8_to_float
from diffpir_core.metrics.fid import (
    FIDStats,
    InceptionFeatures,
    fid_from_stats,
    frechet_distance,
    load_inception,
)
from diffpir_core.metrics.fidelity import psnr, ssim
from diffpir_core.metrics.perceptual import LPIPSScorer, load_lpips
from diffpir_core.metrics.unavailable import MetricUnavailable, hub_checkpoint_dir

__all__ = [
    "BLIND_METRICS",
    "BatchScores",
    "FIDStats",
    "InceptionFeatures",
    "LPIPSScorer",
    "MetricUnavailable",
    "blind_scores",
    "crop_border",
    "fid_from_stats",
    "float_to_uint8",
    "frechet_distance",
    "hub_checkpoint_dir",
    "load_inception",
    "load_lpips",
    "measurement_rms",
    "niqe",
    "piqe",
    "psnr",
    "rgb_to_y_uint8",
    "score_batch",
    "ssim",
    "uint8_to_float",
]
