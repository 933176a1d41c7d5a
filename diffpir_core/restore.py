"""Restoring a shard's images, independent of any orchestrator: measurements, seeding, batches, OOM back-off.

Used by the Prefect tasks, the quality check, the demo and the benchmarks alike. Every image draws its
sampler noise from its own generator seeded by (job seed, image id), and its synthesised degradation
from a seed derived the same way, which makes the restored pixels independent of the batch size, the
shard grid and the order in which shards run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffpir_core.metrics import float_to_uint8, uint8_to_float
from diffpir_core.sampling import DiffPIRConfig, diffpir_sample
from diffpir_core.task_kinds import TaskKind

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ShardInputs:
    """What one shard needs: measurements y (n, 3, h, w) in [0, 1], per-image operator parameters, ids."""

    ids: list[str]
    y: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def batch(self, start: int, stop: int) -> ShardInputs:
        """Images ``start:stop``; per-image parameters (first dim = images) sliced, shared ones passed whole."""
        params = {k: (v[start:stop] if v.dim() >= 3 else v) for k, v in self.params.items()}
        return ShardInputs(self.ids[start:stop], self.y[start:stop], params)


def image_seed(job_seed: int, image_id: str) -> int:
    """A 63-bit seed for one image, stable across runs, shard sizes and machines."""
    digest = hashlib.sha256(f"{job_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def degradation_seed(job_seed: int, image_id: str) -> int:
    """The 32-bit seed of one image's kernel, mask and noise (NumPy's legacy RNG takes 32 bits)."""
    return image_seed(job_seed, f"degrade:{image_id}") % (2**32)


def synthesise(
    task: TaskKind, ids: list[str], truth_u8: np.ndarray, job_seed: int, storage_options: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Evaluate mode: the task's measurement arrays for ground truth (n, H, W, 3), seeded per image id."""
    return task.synthesise(truth_u8, [degradation_seed(job_seed, i) for i in ids], storage_options)


def inputs_from_arrays(task: TaskKind, ids: list[str], arrays: Mapping[str, np.ndarray]) -> ShardInputs:
    """Stored (or just synthesised) measurement arrays as sampler inputs, y channels-first."""
    y = torch.from_numpy(np.ascontiguousarray(arrays["y"].transpose(0, 3, 1, 2), dtype=np.float32))
    return ShardInputs(ids=ids, y=y, params=task.params_from_arrays(arrays))


def inputs_as_given(
    task: TaskKind, ids: list[str], degraded_u8: np.ndarray, storage_options: Mapping[str, Any]
) -> ShardInputs:
    """Restore mode: the stored images are the measurements; operator data comes from the task's files."""
    params = task.given_params(degraded_u8.shape[:3], storage_options)
    return ShardInputs(ids=ids, y=uint8_to_float(degraded_u8), params=params)


def restore_batchwise(
    unet: torch.nn.Module,
    inputs: ShardInputs,
    task: TaskKind,
    config: DiffPIRConfig,
    *,
    seed: int,
    batch_size: int,
    device: str,
    precision: str = "fp32",
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
                restored = restore_batch(unet, inputs.batch(start, stop), task, config, seed=seed, device=device)
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


def restore_batch(
    unet: torch.nn.Module, inputs: ShardInputs, task: TaskKind, config: DiffPIRConfig, *, seed: int, device: str
) -> torch.Tensor:
    """One batch through the sampler with one generator per image; (B, 3, H, W) float, unclamped."""
    generators = [torch.Generator(device=device).manual_seed(image_seed(seed, i)) for i in inputs.ids]
    operator = task.operator({k: v.to(device) for k, v in inputs.params.items()})
    return diffpir_sample(unet, operator, inputs.y.to(device), config, generator=generators)
