"""The UNet against the reference: full-size manifests, the small output vectors, the tiny DiffPIR prior."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffpir_core.models import PRESETS, UNET_DEFAULTS, X0Predictor, build_unet, load_prior

SMALL_VECTORS = ("headch", "numheads", "neworder")
MANIFESTS = {"ffhq_256": "guided_unet_ffhq256_manifest.json", "imagenet_256": "guided_unet_imagenet256_manifest.json"}


@pytest.mark.parametrize("preset", sorted(MANIFESTS))
def test_preset_config_builds_the_manifest_state_dict(testvectors: Path, preset: str) -> None:
    manifest = json.loads((testvectors / MANIFESTS[preset]).read_text())
    assert PRESETS[preset].config == manifest["create_model_args"]
    with torch.device("meta"):
        unet = build_unet(**PRESETS[preset].config)
    shapes = [(key, list(value.shape)) for key, value in unet.state_dict().items()]
    assert shapes == list(manifest["state_dict"].items())
    num_params = sum(p.numel() for p in unet.parameters())
    assert num_params == manifest["total_params"] == PRESETS[preset].num_params
    assert len(shapes) == manifest["num_tensors"]


@pytest.mark.parametrize("name", SMALL_VECTORS)
def test_small_vectors_load_strictly_and_reproduce_the_reference_output(
    small_vector_path: Callable[[str], Path], name: str
) -> None:
    bundle = torch.load(small_vector_path(name), weights_only=True)
    prior = load_prior(small_vector_path(name))
    assert prior.config == bundle["config"]
    assert list(prior.unet.state_dict()) == list(bundle["state_dict"])
    assert not prior.unet.training
    with torch.no_grad():
        out = prior.unet(bundle["x"], bundle["t"])
    rel = ((out - bundle["out"]).abs().max() / bundle["out"].abs().max()).item()
    assert rel < 1e-4, f"{name}: max|err|/max|out| = {rel:.2e}"


def test_tiny_diffpir_prior_loads_and_gives_the_reference_x0(reference_dir: Path) -> None:
    """The DiffPIR reference's tiny UNet through load_prior + X0Predictor vs. its traced x0 estimates.

    x̂0 = c1·x − c2·ε̂ amplifies the network's float32 rounding by c1 ≈ c2 (157 at t=999), so the
    error is compared in ε units: |Δx̂0| / c1_t (measured up to 1.1e-5).
    """
    summary = json.loads((reference_dir / "summary.json").read_text())
    config = {k: summary["model_args"][k] for k in UNET_DEFAULTS}
    prior = load_prior(reference_dir / "tiny_unet_state_dict.pt", config=config)
    assert sum(p.numel() for p in prior.unet.parameters()) == 4_474_662
    case = torch.load(reference_dir / "deblur_gaussian.pt", weights_only=True)
    x0_of = X0Predictor(prior.unet)
    x = case["x_T"]
    with torch.no_grad():
        for step in case["trace"][:4]:  # t = 999, 666, 528, 422: the ill-conditioned end of the schedule
            t = torch.tensor([step["t_i"]])
            err = (x0_of(x, t) - step["x0_model"]).abs().max().item() / x0_of.c1[t].item()
            assert err < 5e-5, f"step {step['i']} (t={step['t_i']}): max abs err / c1_t = {err:.2e}"
            x = step["x_next"]
