"""Fast inference options against the float32 reference path (the small reference vectors, on CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffpir_core.models import InferenceOptions, X0Predictor, load_prior, optimize_for_inference
from diffpir_core.models.layers import AttentionBlock

# Relative L2 error ||out - ref|| / ||ref|| allowed per option. The float32 options only reorder
# arithmetic (measured <= 1e-5); half precision is loose because the test networks have every layer,
# including the zero-initialised ones, redrawn at full gain (measured: bf16 0.06-0.10, fp16 ~0.01).
FLOAT32_TOL = 1e-4
OPTIONS = [
    pytest.param(InferenceOptions(attention="sdpa"), FLOAT32_TOL, id="sdpa"),
    pytest.param(InferenceOptions(channels_last=True), FLOAT32_TOL, id="channels_last"),
    pytest.param(InferenceOptions(attention="sdpa", channels_last=True), FLOAT32_TOL, id="sdpa+channels_last"),
]
HALF_OPTIONS = [
    pytest.param(InferenceOptions(autocast="bf16"), 0.15, id="autocast_bf16"),
    pytest.param(InferenceOptions(autocast="fp16"), 0.03, id="autocast_fp16"),
    pytest.param(InferenceOptions(attention="sdpa", channels_last=True, autocast="bf16"), 0.15, id="all_bf16"),
]


def _rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize(
    ("name", "options", "tol"),
    [pytest.param(name, *p.values, id=f"{p.id}-{name}") for p in OPTIONS for name in ("headch", "numheads")]
    + [pytest.param("headch", *p.values, id=p.id) for p in HALF_OPTIONS],
)
def test_option_matches_the_float32_reference(
    small_vector_path: Callable[[str], Path], name: str, options: InferenceOptions, tol: float
) -> None:
    bundle = torch.load(small_vector_path(name), weights_only=True)
    fast = optimize_for_inference(load_prior(small_vector_path(name)).unet, options)
    with torch.no_grad():
        out = fast(bundle["x"], bundle["t"])
    assert out.dtype == torch.float32 and out.shape == bundle["out"].shape
    err = _rel_l2(out, bundle["out"])
    assert err < tol, f"{options}: relative L2 error {err:.2e} >= {tol}"


def test_options_are_applied_to_the_model(small_vector_path: Callable[[str], Path]) -> None:
    unet = load_prior(small_vector_path("headch")).unet.train()
    fast = optimize_for_inference(unet, InferenceOptions(attention="sdpa", channels_last=True))
    blocks = [m for m in unet.modules() if isinstance(m, AttentionBlock)]
    assert blocks and all(block.impl == "sdpa" for block in blocks)
    assert unet.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not unet.training
    optimize_for_inference(unet)
    assert all(block.impl == "reference" for block in blocks)
    assert fast.unet is unet


def test_x0_predictor_over_a_fast_unet_stays_float32(small_vector_path: Callable[[str], Path]) -> None:
    unet = load_prior(small_vector_path("numheads")).unet
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    t = torch.tensor([50, 400])
    with torch.no_grad():
        ref = X0Predictor(unet)(x, t)
        fast = X0Predictor(optimize_for_inference(unet, InferenceOptions(autocast="bf16")))(x, t)
    assert fast.dtype == torch.float32
    assert _rel_l2(fast, ref) < 0.15


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="choose 'reference' or 'sdpa'"):
        InferenceOptions(attention="flash")
    with pytest.raises(ValueError, match="choose None, 'bf16' or 'fp16'"):
        InferenceOptions(autocast="fp8")


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("options", "tol"),
    [
        pytest.param(InferenceOptions(attention="sdpa", channels_last=True, autocast="bf16"), 0.15, id="bf16"),
        pytest.param(InferenceOptions(attention="sdpa", autocast="fp16", compile=True), 0.03, id="fp16+compile"),
    ],
)
def test_cuda_paths_match_the_reference(
    small_vector_path: Callable[[str], Path], options: InferenceOptions, tol: float
) -> None:
    bundle = torch.load(small_vector_path("headch"), weights_only=True)
    fast = optimize_for_inference(load_prior(small_vector_path("headch"), device="cuda").unet, options)
    with torch.no_grad():
        out = fast(bundle["x"].cuda(), bundle["t"].cuda()).cpu()
    assert _rel_l2(out, bundle["out"]) < tol
