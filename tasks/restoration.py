"""Restore the images of one shard: batches through ``diffpir_sample``, per-image generators, OOM back-off.

Plain PyTorch (no Prefect), so it is tested and benchmarked without a server. Every image draws its
noise from its own generator seeded by (job seed, image id), which makes the restored pixels
independent of the batch size, the shard grid and the order in which shards run.
"""

import hashlib
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from diffpir_core.metrics import float_to_uint8
from diffpir_core.operators import Blur, Inpainting, Operator, SuperResolution
from diffpir_core.sampling import DiffPIRConfig, diffpir_sample

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ShardInputs:
    """What one shard needs: measurements y (n, 3, h, w) in [0, 1], per-image operator parameters, ids."""

    ids: list[str]
    y: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)


def image_seed(job_seed: int, image_id: str) -> int:
    """A 63-bit seed for one image, stable across runs, shard sizes and machines."""
    digest = hashlib.sha256(f"{job_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_operator(kind: str, params: dict[str, torch.Tensor], *, scale: int = 1) -> Operator:
    """The operator of a batch: SR (shared bicubic kernel), Blur (per-image kernels), Inpainting (masks)."""
    if kind == "sr":
        return SuperResolution(scale)
    if kind == "deblur":
        return Blur(params["kernel"])
    if kind == "inpaint":
        return Inpainting(params["mask"])
    raise ValueError(f"unknown task kind {kind!r}; expected sr, deblur or inpaint")


def _slice_params(params: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Per-image parameters (first dim = images) sliced to a batch; shared ones (no image dim) passed whole."""
    return {k: (v[start:stop] if v.dim() >= 3 else v) for k, v in params.items()}


def restore_batchwise(
    unet: torch.nn.Module,
    inputs: ShardInputs,
    kind: str,
    config: DiffPIRConfig,
    *,
    seed: int,
    batch_size: int,
    device: str,
    precision: str = "fp32",
    scale: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Restore all images of ``inputs``; returns (uint8 (n, H, W, 3), the batch size that fit in memory).

    A CUDA out-of-memory error halves the batch and retries that batch (down to 1 image) instead of
    failing the shard; the smaller batch size is kept for the rest of the shard.
    """
    n = inputs.y.shape[0]
    outputs: list[np.ndarray] = []
    start, size = 0, max(1, batch_size)
    autocast = (
        torch.autocast(device_type="cuda", dtype=PRECISIONS[precision])
        if precision != "fp32" and device.startswith("cuda")
        else nullcontext()
    )
    while start < n:
        stop = min(start + size, n)
        try:
            with autocast:
                restored = _sample(unet, inputs, kind, config, seed, start, stop, device, scale)
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory at batch %d; retrying with batch size %d", stop - start, size)
            continue
        outputs.append(float_to_uint8(restored.float().cpu()))
        if on_batch is not None:
            on_batch(stop, n)
        start = stop
    return np.concatenate(outputs), size


def _sample(
    unet: torch.nn.Module,
    inputs: ShardInputs,
    kind: str,
    config: DiffPIRConfig,
    seed: int,
    start: int,
    stop: int,
    device: str,
    scale: int,
) -> torch.Tensor:
    ids = inputs.ids[start:stop]
    generators = [torch.Generator(device=device).manual_seed(image_seed(seed, i)) for i in ids]
    params = {k: v.to(device) for k, v in _slice_params(inputs.params, start, stop).items()}
    operator = make_operator(kind, params, scale=scale)
    y = inputs.y[start:stop].to(device)
    return diffpir_sample(unet, operator, y, config, generator=generators)
