"""What every sampler shares: the noise source, the measurement and model checks, the step callback type.

The samplers (DiffPIR, DPS, DDRM, DPIR) differ in their updates but take the same arguments; the
helpers here keep their input checks, error messages and randomness identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from diffpir_core.models import X0Predictor

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""``callback(i, t, x, x0, x0_hat)``: step index, timestep, state after the step, x̃0, x̂0 (diffusion space)."""

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


class NoiseSource:
    """N(0, I) draws of batch shape: per image from its own generator, from one shared generator, or
    (no generator) from PyTorch's global RNG. Drawn on the generator's device, then moved, so CPU
    generators give the same noise whatever device the sampler runs on.

    ``reference_order``: fill the tensor in H×W×C memory order, as the DiffPIR reference's channels-last
    tensors are filled. A non-contiguous tensor makes PyTorch use its scalar normal sampler instead of
    the vectorised one, so this (not a plain ``randn``) reproduces the reference's noise bit for bit.
    """

    def __init__(
        self, generator: GeneratorArg, batch: int, device: torch.device, reference_order: bool = False
    ) -> None:
        if isinstance(generator, Sequence) and len(generator) != batch:
            raise ValueError(
                f"got {len(generator)} generators for a batch of {batch} images: pass one per image "
                "(or a single generator, which makes results depend on the batch composition)"
            )
        self.generator = generator
        self.device = device
        self.reference_order = reference_order

    def draw(self, shape: torch.Size, reference_order: bool | None = None) -> torch.Tensor:
        """Noise of ``shape`` (B, C, H, W); ``reference_order`` overrides the source's default."""
        order = self.reference_order if reference_order is None else reference_order
        gen = self.generator
        if isinstance(gen, Sequence):
            noise = torch.cat([_normal((1, *shape[1:]), g, g.device, order) for g in gen])
        elif gen is None:
            noise = _normal(shape, None, self.device, order)
        else:
            noise = _normal(shape, gen, gen.device, order)
        return noise.to(self.device)


def _normal(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device, hwc_order: bool
) -> torch.Tensor:
    if not hwc_order:
        return torch.randn(shape, generator=generator, device=device)
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


def timestep_batch(t: int, like: torch.Tensor) -> torch.Tensor:
    """The integer timestep ``t`` once per image of ``like``'s batch, on its device."""
    return torch.full((like.shape[0],), t, dtype=torch.long, device=like.device)
