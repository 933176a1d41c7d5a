"""``DiffPIRConfig``: every hyper-parameter of one DiffPIR run, validated, and round-trippable to YAML.

Defaults are the reference's (docs/algorithm.md §7); the options of its §8 are opt-in fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from diffpir_core.sampling.schedule import SkipType, network_calls

ReturnMode = Literal["x_t0", "x0_hat"]
DataStepDtype = Literal["float32", "float64"]
Numerics = Literal["fast", "reference"]


def _array_to_floats(value: Any) -> Any:
    """Tensors/arrays become Python floats; float32 ones via the shortest decimal that rounds to them
    (float32 0.05 is 0.0500000007, which would move ρ by an ulp: 0.05 is what was meant)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        return value
    if value.ndim > 1:
        raise ValueError(f"noise_sigma must be a scalar or 1-D (one per image), got shape {tuple(value.shape)}")
    array = value.detach().cpu().numpy()
    if value.dtype != torch.float64:
        array = array.astype(np.float32)
        floats = [float(np.format_float_positional(v, unique=True)) for v in array.reshape(-1)]
    else:
        floats = array.reshape(-1).tolist()
    return floats[0] if value.ndim == 0 else floats


def _non_negative(value: float | list[float]) -> float | list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise ValueError(f"noise_sigma must be in [0, 1) on the [0, 1] image scale (e.g. 0.05), got {value}")
    return value


NoiseSigma = Annotated[float | list[float], BeforeValidator(_array_to_floats), AfterValidator(_non_negative)]
"""The measurement's AWGN std on the [0, 1] scale: one float for the batch or one per image (a list, or a
1-D tensor/array converted to a list), validated the same way by every sampler's config."""


def per_image_sigmas(noise_sigma: float | list[float], batch: int) -> list[float]:
    """σ per image for a batch of ``batch`` images (a scalar is shared)."""
    if isinstance(noise_sigma, list):
        if len(noise_sigma) != batch:
            raise ValueError(
                f"noise_sigma has {len(noise_sigma)} values for a batch of {batch} images: "
                "give one per image or a single float"
            )
        return list(noise_sigma)
    return [noise_sigma] * batch


class DiffPIRConfig(BaseModel):
    """Hyper-parameters of :func:`diffpir_sample` (reference names; notation of docs/algorithm.md §1).

    λ = 7, ζ = 0.3 by default (the reference's deblurring run values); per-task run values are the
    task kinds' ``PRESET`` (``diffpir_core.task_kinds``), refined by the prior's card (``sampling.settings``).

    ``noise_sigma`` is the measurement's AWGN std on the [0, 1] scale, one float for the batch or one per
    image (a list, or a 1-D tensor/array converted to a list); it sets ρ_t and the deblur/inpainting x_T.
    ``return_mode``: ``x_t0`` returns x/2+0.5 after the last update, as the reference (docs/algorithm.md §4.5, a t = 0
    sample carrying ≈ 0.01 residual noise); ``x0_hat`` returns the network's clean estimate at the last
    step instead. ``data_step_dtype="float64"`` solves the data step in double precision (more accurate
    at the ill-conditioned first steps, not bit-compatible with the reference, docs/algorithm.md §8 #5).
    ``reference_noise`` (default): per-step noise comes from PyTorch's scalar normal sampler in H×W×C
    order, plus one discarded draw per network call, so a seeded stochastic run reproduces the
    reference's bit for bit (docs/algorithm.md §4.7); False draws with the vectorised ``randn`` and skips the
    discarded draw (faster noise, equally valid, different numbers).
    ``numerics``: how the UNet is evaluated. ``fast`` (default): SDPA attention and channels-last
    weights and inputs, 1.3–1.5× faster on CPU, the layout GPUs want; outputs within 1e-3 of the reference's
    (docs/algorithm.md §4.8). ``reference``: the reference's einsum attention on contiguous NCHW inputs,
    bit for bit the numbers of earlier versions.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lambda_: float = Field(7.0, gt=0, description="λ: data-fidelity weight in ρ_t = λσ_n²/σ̄_t²")
    zeta: float = Field(0.3, ge=0, le=1, description="ζ: share of fresh noise in the update (0 = DDIM-like)")
    eta: float = Field(0.0, ge=0, description="η: DDIM-style noise inside the √(1−ζ) branch (one-step β)")
    iter_num: int = Field(100, ge=1, le=1000, description="N: number of sampling steps (NFEs for quad)")
    skip_type: SkipType = Field("quad", description="timestep spacing: quad (N NFEs) or uniform (N+1)")
    t_start: int = Field(999, ge=0, le=999, description="x_T is built at t_start; later steps only")
    noise_sigma: NoiseSigma = Field(0.0, description="AWGN std on [0,1], scalar or per image")
    guidance_scale: float = Field(1.0, description="g: x̂0 = x̃0 + g·(x_p − x̃0)")
    iter_num_U: int = Field(1, ge=1, description="repeats per step with re-noising (RePaint-style; not the last step)")
    return_mode: ReturnMode = Field("x_t0", description="x_t0 (reference) or x0_hat (clean estimate)")
    data_step_dtype: DataStepDtype = Field("float32", description="float32 (reference) or float64")
    reference_noise: bool = Field(True, description="draw per-step noise exactly as the reference")
    numerics: Numerics = Field(
        "fast", description="UNet evaluation: fast (SDPA, channels-last) or reference (bit for bit)"
    )

    @property
    def nfes(self) -> int:
        """Network evaluations per image of this run (:func:`network_calls`)."""
        return network_calls(self.iter_num, self.skip_type, self.t_start, self.iter_num_U)

    def noise_sigmas(self, batch: int) -> list[float]:
        """σ per image for a batch of ``batch`` images (a scalar is shared)."""
        return per_image_sigmas(self.noise_sigma, batch)
