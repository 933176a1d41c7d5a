"""What every sampler shares: the noise source, the measurement and model checks, the step callback's report.

The samplers (DiffPIR, DPS, DDRM, DPIR) differ in their updates but take the same arguments; the
helpers here keep their input checks, error messages and randomness identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from diffpir_core.models import X0Predictor
from diffpir_core.models.layers import AttentionBlock
from diffpir_core.operators import Operator
from diffpir_core.sampling.config import Numerics


@dataclass(frozen=True)
class Step:
    """What a sampler reports after each of its steps (as k-diffusion's callback dict, typed); tensors in diffusion
    space ([−1, 1]), batch-shaped, on the sampler's canvas for a non-circular boundary. Each sampler's docstring says
    what its state and estimates are."""

    i: int
    """Step index: 0, 1, … in the order the steps run (one call per step)."""
    t: int
    """The step's timestep (DPIR: image 0's denoiser timestep)."""
    x: torch.Tensor
    """The state after the step."""
    x0: torch.Tensor
    """The network's clean estimate x̃0 of this step."""
    x0_hat: torch.Tensor
    """The clean estimate after the measurement step x̂0 (x̃0 where a method has none)."""


StepCallback = Callable[[Step], None]
"""``callback(step)`` after each step of a sampler (:class:`Step`)."""

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def check_generators(generator: GeneratorArg, batch: int) -> None:
    """Refuse a list of generators that is not one per image (every sampler, whether it draws noise or not)."""
    if isinstance(generator, Sequence) and len(generator) != batch:
        raise ValueError(
            f"got {len(generator)} generators for a batch of {batch} images: pass one per image "
            "(or a single generator, which makes results depend on the batch composition)"
        )


class NoiseSource:
    """N(0, I) draws of batch shape: per image from its own generator, from one shared generator, or
    (no generator) from PyTorch's global RNG. Drawn on the generator's device, then moved, so CPU
    generators give the same noise whatever device the sampler runs on.

    ``reference_order``: the values the DiffPIR reference draws. It fills channels-last tensors, which
    makes PyTorch use its scalar normal sampler (a double-precision Box–Muller pair per two values, in
    H×W×C memory order) instead of the vectorised ``randn``. On CPU generators the same pairs are
    computed vectorised from the same 53-bit uniforms (``_reference_normal``), bit for bit and several
    times faster; ``skip`` advances a generator past a draw without computing it.
    """

    def __init__(
        self, generator: GeneratorArg, batch: int, device: torch.device, reference_order: bool = False
    ) -> None:
        check_generators(generator, batch)
        self.generator = generator
        self.device = device
        self.reference_order = reference_order

    def draw(self, shape: torch.Size, reference_order: bool | None = None) -> torch.Tensor:
        """Noise of ``shape`` (B, C, H, W); ``reference_order`` overrides the source's default."""
        order = self.reference_order if reference_order is None else reference_order
        gen = self.generator
        if isinstance(gen, Sequence) and order and all(_pairs_on_cpu((1, *shape[1:]), g.device) for g in gen):
            count = math.prod(shape[1:])  # each image's uniforms from its own generator, one transform for the batch
            uniforms = torch.cat([torch.rand(count, dtype=torch.float64, generator=g) for g in gen])
            noise = _box_muller(uniforms, (len(gen), *shape[1:]))
        elif isinstance(gen, Sequence):
            noise = torch.cat([_normal((1, *shape[1:]), g, g.device, order) for g in gen])
        elif gen is None:
            noise = _normal(shape, None, self.device, order)
        else:
            noise = _normal(shape, gen, gen.device, order)
        return noise.to(self.device)

    def skip(self, shape: torch.Size) -> None:
        """Advance the generators exactly as ``draw(shape)`` would, without keeping the noise (the reference's
        unused ancestral sample)."""
        gen = self.generator
        for g in gen if isinstance(gen, Sequence) else [gen]:
            size = (1, *shape[1:]) if isinstance(gen, Sequence) else tuple(shape)
            device = self.device if g is None else g.device
            if self.reference_order and _pairs_on_cpu(size, device):
                torch.rand(math.prod(size), dtype=torch.float64, generator=g)  # one 64-bit word per value
            else:
                _normal(size, g, device, self.reference_order)


def _pairs_on_cpu(shape: torch.Size | tuple[int, ...], device: torch.device) -> bool:
    """Whether the scalar sampler's values can be recomputed vectorised: a CPU generator and whole pairs
    (an odd count leaves half a pair cached in the generator, which only the scalar sampler can use)."""
    return torch.device(device).type == "cpu" and math.prod(shape) % 2 == 0


def _reference_normal(shape: tuple[int, int, int, int], generator: torch.Generator | None) -> torch.Tensor:
    """PyTorch's scalar CPU normal sampler, vectorised: value pairs (r·cos θ, r·sin θ) with u₁, u₂ the
    generator's next two 53-bit uniforms (``torch.rand`` in float64 reads the same words), θ = 2π·u₁,
    r = √(−2·log1p(−u₂)), computed in float64 and rounded to float32, filling (B, H, W, C) in order.

    Vectorised float64 sin/cos/log1p may differ from the C library's by an ulp. Such an ulp can only change
    the float32 value when the float64 one lies next to a float32 rounding midpoint, so the ~1.5e-5 of values
    within 2¹² float64 ulps of one are recomputed with ``math`` (the C library's functions, as the scalar
    sampler uses): the result is the scalar sampler's bit for bit."""
    return _box_muller(torch.rand(math.prod(shape), dtype=torch.float64, generator=generator), shape)


def _box_muller(uniforms: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """:func:`_reference_normal` of these float64 uniforms (the generators' next words, image after image)."""
    b, c, h, w = shape
    u = uniforms.view(-1, 2)
    radius = u[:, 1].neg().log1p_().mul_(-2.0).sqrt_()
    theta = u[:, 0].mul(2.0 * math.pi)
    exact = torch.stack([theta.cos(), theta.sin_()], dim=1).mul_(radius[:, None]).view(-1)
    below_float32 = exact.view(torch.int64) & _BELOW_FLOAT32
    near_midpoint = (below_float32 - _FLOAT32_MIDPOINT).abs_() <= _MIDPOINT_MARGIN
    rounded = exact.float()
    for k in torch.nonzero(near_midpoint).view(-1).tolist():
        u1, u2 = u[k // 2].tolist()
        r = math.sqrt(-2.0 * math.log1p(-u2))
        rounded[k] = r * (math.cos(2.0 * math.pi * u1) if k % 2 == 0 else math.sin(2.0 * math.pi * u1))
    return rounded.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()


_BELOW_FLOAT32 = (1 << 29) - 1  # the 29 float64 mantissa bits that float32 rounds away
_FLOAT32_MIDPOINT = 1 << 28  # their value at a float32 rounding midpoint
_MIDPOINT_MARGIN = 1 << 12  # float64 ulps: far more than vectorised and C-library functions differ by


def _normal(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device, hwc_order: bool
) -> torch.Tensor:
    if not hwc_order:
        return torch.randn(shape, generator=generator, device=device)
    if _pairs_on_cpu(shape, device):
        return _reference_normal(tuple(shape), generator)
    b, c, h, w = shape
    noise = torch.empty((b, h, w, c), device=device).permute(0, 3, 1, 2)
    return noise.normal_(generator=generator).contiguous()


def as_image_batch(y: torch.Tensor) -> torch.Tensor:
    """The measurement as a contiguous float32 (B, 3, h, w) batch, or a clear error."""
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[1] != 3:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a (B, 3, h, w) tensor of RGB images in [0, 1], got {shape}")
    if not y.is_floating_point():
        raise ValueError(f"y must be float in [0, 1], got dtype {y.dtype}: convert uint8 with y.float() / 255")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    return y.float().contiguous()


def as_predictor(model: nn.Module) -> X0Predictor:
    """The x0 predictor of a bare ε-UNet (or the predictor itself); refuses a model in training mode."""
    predictor = model if isinstance(model, X0Predictor) else X0Predictor(model)
    if any(isinstance(m, nn.Dropout) and m.training for m in predictor.unet.modules()):
        raise ValueError("the model is in training mode (dropout active): call model.eval() before sampling")
    return predictor


def check_image_size(unet: nn.Module, height: int, width: int) -> None:
    """The UNet's down-sampling needs H and W to be multiples of its factor: say how to pad or crop."""
    factor = getattr(unet, "downsample_factor", None)
    if factor is None or (height % factor == 0 and width % factor == 0):
        return
    pad_h, pad_w = -height % factor, -width % factor
    raise ValueError(
        f"the restored image would be {height}×{width}, but this UNet needs H and W to be multiples of "
        f"{factor} (2^levels): pad the measurement by {pad_h} rows and {pad_w} columns (reflect padding, "
        f"then crop the result) or crop it to {height - height % factor}×{width - width % factor}"
        " (scaled down by the SR factor for a low-resolution y)"
    )


def canvas_operator(operator: Operator, unet: nn.Module, y: torch.Tensor) -> Operator:
    """The operator a sampler runs on for ``y``: the operator itself, or for a non-circular boundary its canvas
    operator with sides multiples of the UNet's down-sampling factor (the sampler crops its result with
    ``crop``, docs/operators.md)."""
    return operator.on_canvas(y, getattr(unet, "downsample_factor", None) or 1)


def set_network_numerics(unet: nn.Module, numerics: Numerics) -> torch.memory_format:
    """Evaluate ``unet`` the ``numerics`` way and return the memory format its inputs must have.

    ``fast``: ``scaled_dot_product_attention`` in every attention block, convolution weights channels-last;
    ``reference``: the einsum attention, contiguous weights. Values are unchanged (only the layout and the
    attention kernel), and a model already set up costs nothing, so a sampler call sets it every time.
    """
    fast = numerics == "fast"
    layout = torch.channels_last if fast else torch.contiguous_format
    for m in unet.modules():
        if isinstance(m, AttentionBlock):
            m.impl = "sdpa" if fast else "reference"
    unet.to(memory_format=layout)
    return layout


def timestep_batch(t: int, like: torch.Tensor) -> torch.Tensor:
    """The integer timestep ``t`` once per image of ``like``'s batch, on its device."""
    return torch.full((like.shape[0],), t, dtype=torch.long, device=like.device)
