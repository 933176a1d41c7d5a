"""Faster UNet evaluation: SDPA attention, channels_last, autocast to bf16/fp16, ``torch.compile``.

The plain float32 model is the reference; each option here trades bit-compatibility for speed and is
checked against it in ``tests/core/models/test_inference.py``. Typical GPU choice:
``InferenceOptions(attention="sdpa", channels_last=True, autocast="bf16")``.
TF32 matmuls are a process-wide switch (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``), so they are left to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from diffpir_core.models.layers import AttentionImpl
from diffpir_core.models.unet import UNetModel

Precision = Literal["bf16", "fp16"]
_AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the UNet. The defaults are the float32 reference path.

    ``attention``: ``"reference"`` (the guided-diffusion einsum math) or ``"sdpa"``
    (``F.scaled_dot_product_attention``: flash/memory-efficient kernels on GPU).
    ``channels_last``: NHWC memory layout for weights and inputs (faster convolutions on tensor cores).
    ``autocast``: ``None`` (float32), ``"bf16"`` or ``"fp16"`` mixed precision; GroupNorm, softmax and
    the timestep embedding stay in float32 as in the reference.
    ``compile``: wrap the forward in ``torch.compile`` (first call compiles for a while).
    """

    attention: AttentionImpl = "reference"
    channels_last: bool = False
    autocast: Precision | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ("reference", "sdpa"):
            raise ValueError(f"attention={self.attention!r}: choose 'reference' or 'sdpa'")
        if self.autocast is not None and self.autocast not in _AUTOCAST_DTYPES:
            raise ValueError(f"autocast={self.autocast!r}: choose None, 'bf16' or 'fp16'")


class FastUNet(nn.Module):
    """A UNet run with ``InferenceOptions``; same call and output dtype as the wrapped model.

    Returns the output in the input's dtype, so an ``X0Predictor`` around it stays float32.
    """

    def __init__(self, unet: UNetModel, options: InferenceOptions) -> None:
        super().__init__()
        self.unet = unet
        self.options = options
        self._forward = torch.compile(self._run) if options.compile else self._run

    def _run(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.options.autocast is None:
            return self.unet(x, t)
        with torch.autocast(device_type=x.device.type, dtype=_AUTOCAST_DTYPES[self.options.autocast]):
            return self.unet(x, t)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._forward(x, t).to(x.dtype)


def optimize_for_inference(unet: UNetModel, options: InferenceOptions | None = None) -> FastUNet:
    """Configure ``unet`` in place (attention implementation, memory layout, eval mode) and wrap it.

    The returned module is called like the UNet: ``fast(x, t)``.
    """
    options = options or InferenceOptions()
    unet.set_attention_impl(options.attention)
    if options.channels_last:
        unet.to(memory_format=torch.channels_last)
    unet.eval()
    return FastUNet(unet, options)
