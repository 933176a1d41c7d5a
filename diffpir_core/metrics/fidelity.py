"""Full-reference pixel metrics with the reference's conventions: PSNR and SSIM on uint8 RGB.

Both take uint8 channels-last images, one (H, W, 3) or a batch (N, H, W, 3), crop ``border`` pixels per
side (the reference uses the SR scale factor for SR, 0 otherwise) and can score the BT.601 luma instead
of RGB (``y_channel=True``, the reference's PSNR-Y). A single image gives a float, a batch a (N,) array.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from diffpir_core.metrics.convert import _check_u8, crop_border, rgb_to_y_uint8

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11-tap window: skimage's radius int(3.5·σ + 0.5) and the 11×11 window of Wang et al.
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def psnr(out_u8: np.ndarray, ref_u8: np.ndarray, border: int = 0, y_channel: bool = False) -> float | np.ndarray:
    """PSNR in dB: float64 MSE over all (cropped) pixels and channels, 20·log10(255/√MSE); inf if equal."""
    out, ref, batched = _prepare_pair(out_u8, ref_u8, border, y_channel)
    mse = np.mean((out - ref) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 20.0 * np.log10(255.0 / np.sqrt(mse))
    return values if batched else float(values[0])


def ssim(out_u8: np.ndarray, ref_u8: np.ndarray, border: int = 0, y_channel: bool = False) -> float | np.ndarray:
    """Mean SSIM (Wang et al. 2004) with an 11-tap Gaussian window, σ = 1.5, on the 0–255 scale.

    Conventions of KAIR/DiffPIR ``calculate_ssim`` and of ``skimage.metrics.structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``:
    population (co)variances, K1 = 0.01, K2 = 0.03, the map averaged over the "valid" region (5 pixels
    less per side, so borders are never padded) and then over channels.
    """
    out, ref, batched = _prepare_pair(out_u8, ref_u8, border, y_channel)
    if min(out.shape[1], out.shape[2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(
            f"SSIM needs images of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} pixels after "
            f"the border crop; got {out.shape[1]}x{out.shape[2]}"
        )
    mu_x, mu_y = _gaussian_mean(out), _gaussian_mean(ref)
    var_x = _gaussian_mean(out * out) - mu_x**2
    var_y = _gaussian_mean(ref * ref) - mu_y**2
    cov = _gaussian_mean(out * ref) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    values = np.mean(numerator / denominator, axis=(1, 2, 3))
    return values if batched else float(values[0])


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    window = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return window / window.sum()


def _gaussian_mean(images: np.ndarray) -> np.ndarray:
    """Separable Gaussian local mean of (N, H, W, C), keeping only the valid (unpadded) region."""
    window = _gaussian_window()
    smoothed = correlate1d(correlate1d(images, window, axis=1), window, axis=2)
    r = SSIM_RADIUS
    return smoothed[:, r:-r, r:-r, :]


def _prepare_pair(
    out_u8: np.ndarray, ref_u8: np.ndarray, border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray, bool]:
    out, ref = _check_u8(out_u8, "out_u8"), _check_u8(ref_u8, "ref_u8")
    if out.shape != ref.shape:
        raise ValueError(f"output {out.shape} and reference {ref.shape} differ in shape; score images of equal size")
    batched = out.ndim == 4
    if not batched:
        out, ref = out[None], ref[None]
    if y_channel:
        out, ref = rgb_to_y_uint8(out)[..., None], rgb_to_y_uint8(ref)[..., None]
    out, ref = crop_border(out, border), crop_border(ref, border)
    return out.astype(np.float64), ref.astype(np.float64), batched
