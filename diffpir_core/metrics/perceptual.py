"""LPIPS (Zhang et al. 2018), VGG variant of the ``lpips`` package (0.1.4), as the DiffPIR paper reports it.

The reference scores P(clamp(x_out)) against P(HR/255) — the clamped but unquantised output, mapped to
[−1, 1] — and so does :class:`LPIPSScorer` given float images. Needs the ``metrics`` extra and the
torchvision VGG16 weights in the torch hub cache; :func:`load_lpips` returns :class:`MetricUnavailable`
otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from diffpir_core.metrics.unavailable import (
    INSTALL_FIX,
    MetricUnavailable,
    import_optional,
    missing_weights,
)

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"

_LOADED: dict[str, LPIPSScorer] = {}


class LPIPSScorer:
    """Per-image LPIPS distances of float images; one VGG network per device and process."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        self.network = network
        self.device = device

    @torch.no_grad()
    def __call__(self, out: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
        """LPIPS of (B, 3, H, W) float images in [0, 1] (``out`` is clamped first) -> float64 (B,)."""
        if out.shape != ref.shape or out.ndim != 4 or out.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) tensors of equal shape, got {tuple(out.shape)} and {tuple(ref.shape)}"
            )
        out_pm = out.to(self.device, torch.float32).clamp(0.0, 1.0) * 2.0 - 1.0
        ref_pm = ref.to(self.device, torch.float32) * 2.0 - 1.0
        distances = self.network(out_pm, ref_pm)
        return distances.reshape(out.shape[0]).double().cpu().numpy()


def missing_lpips_weights() -> MetricUnavailable | None:
    """Why LPIPS cannot run offline here (its VGG16 weights are not in the torch hub cache), or None: the cheap check
    a job makes before any work, without importing torchvision or building the network."""
    return missing_weights("LPIPS", VGG16_FILE, VGG16_URL)


def load_lpips(device: str | torch.device = "cpu", *, allow_download: bool = False) -> LPIPSScorer | MetricUnavailable:
    """The LPIPS-VGG scorer for ``device``, or why it cannot be built here (never raises).

    Without ``allow_download`` the VGG16 weights must already be in the hub cache (no network access
    at run time); the LPIPS linear layers ship inside the ``lpips`` package.
    """
    device = torch.device(device)
    if str(device) in _LOADED:
        return _LOADED[str(device)]
    module = import_optional("LPIPS", "lpips")
    if isinstance(module, MetricUnavailable):
        return module
    if not allow_download and (missing := missing_lpips_weights()):
        return missing
    try:
        network = module.LPIPS(net="vgg", verbose=False).eval().to(device)
    except Exception as error:
        return MetricUnavailable("LPIPS", f"building LPIPS(net='vgg') failed ({error})", INSTALL_FIX)
    scorer = LPIPSScorer(network, device)
    _LOADED[str(device)] = scorer
    return scorer
