"""Restoring a shard's images, independent of any orchestrator: measurements, seeding, batches, OOM back-off.

Used by the Prefect tasks, the quality check, the demo and the benchmarks alike. Every image draws its
sampler noise from its own generator seeded by (job seed, image id), and its synthesised degradation
from a seed derived the same way, which makes the restored pixels independent of the batch size, the
shard grid and the order in which shards run.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel

from diffpir_core.metrics import float_to_uint8, uint8_to_float
from diffpir_core.models.tiling import TiledUNet, tile_starts
from diffpir_core.operators import estimate_noise_sigma
from diffpir_core.runs.progress import ShardMeter
from diffpir_core.sampling import restore_with
from diffpir_core.sampling.common import StepCallback
from diffpir_core.task_kinds import TaskKind
from diffpir_core.task_kinds.base import AUTO_SIGMA, GivenData

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ShardInputs:
    """What one shard needs: measurements y (n, 3, h, w) in [0, 1], per-image operator parameters, ids.

    ``noise_sigma``: one σ per image when the images have their own (restore mode with a manifest), else None
    (the config's). ``quarantined``: images (id -> reason) whose operator data is missing or unfit; they keep
    placeholder data in ``params`` and are not restored (their output rows stay empty). ``samples``: the
    posterior sample each row draws (its noise seeded by :func:`sample_seed`; None = sample 0 for every row).
    """

    ids: list[str]
    y: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    noise_sigma: list[float] | None = None
    quarantined: dict[str, str] = field(default_factory=dict)
    samples: list[int] | None = None

    def batch(self, start: int, stop: int) -> ShardInputs:
        """Images ``start:stop``; per-image parameters (first dim = images) sliced, shared ones passed whole."""
        return self.select(range(start, stop))

    def select(self, indices: Sequence[int]) -> ShardInputs:
        """The images at ``indices`` (in that order), per-image parameters picked the same way as in :meth:`batch`."""
        indices = list(indices)
        index = torch.as_tensor(indices, dtype=torch.long)
        params = {k: (v[index] if v.dim() >= 3 else v) for k, v in self.params.items()}
        ids = [self.ids[i] for i in indices]
        sigma = None if self.noise_sigma is None else [self.noise_sigma[i] for i in indices]
        quarantined = {i: self.quarantined[i] for i in ids if i in self.quarantined}
        samples = None if self.samples is None else [self.samples[i] for i in indices]
        return ShardInputs(ids, self.y[index], params, sigma, quarantined, samples)

    def replicated(self, samples: Sequence[int]) -> ShardInputs:
        """Every image once per posterior sample of ``samples`` (image-major: the samples of an image are neighbours,
        so they share a batch where the batch size allows); quarantined images are left out."""
        kept = self.kept()
        rows = self.select([i for i in kept for _ in samples])
        rows.samples = [k for _ in kept for k in samples]
        return rows

    def kept(self) -> list[int]:
        """Positions of the images that are restored (all but the quarantined ones)."""
        return [i for i, image_id in enumerate(self.ids) if image_id not in self.quarantined]


@dataclass(frozen=True)
class Fit:
    """How images meet the network: padded to the sizes it takes, and tiled when larger than its training size.

    ``pad``: reflect-pad the measurement at the bottom/right so the restored size is a multiple of the
    UNet's downsampling factor (the task kind pads its own operator data, e.g. masks with "unknown"),
    and crop the result back, so every image comes back at its own size; False refuses such sizes.
    ``tile``: largest side the network sees (None = the prior's training size ``unet.image_size``;
    0 = never tile); ``overlap`` between tiles (None = a quarter tile); ``tile_batch`` tiles per call.
    """

    pad: bool = True
    tile: int | None = None
    overlap: int | None = None
    tile_batch: int = 8

    def _tiling(self, image_size: int | None) -> tuple[int, int] | None:
        """(tile, overlap) for a prior trained at ``image_size``; None when tiling is off or the size unknown."""
        tile = self.tile if self.tile is not None else image_size or 0
        if not tile:
            return None
        return tile, tile // 4 if self.overlap is None else self.overlap

    def tiles(self, height: int, width: int, image_size: int | None) -> int:
        """Tile forwards per network call on a ``height`` × ``width`` image for a prior trained at ``image_size``."""
        tiling = self._tiling(image_size)
        if tiling is None:
            return 1
        return len(tile_starts(height, *tiling)) * len(tile_starts(width, *tiling))

    def network(self, unet: torch.nn.Module) -> torch.nn.Module:
        """``unet`` wrapped for tiled evaluation, unless tiling is off or the prior's size is unknown."""
        tiling = self._tiling(getattr(unet, "image_size", 0))
        return unet if tiling is None else TiledUNet(unet, *tiling, self.tile_batch)


def _reflect(y: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    if pad_h == 0 and pad_w == 0:
        return y
    mode = "reflect" if pad_h < y.shape[-2] and pad_w < y.shape[-1] else "replicate"
    return F.pad(y, (0, pad_w, 0, pad_h), mode=mode)


def measurement_padding(
    unet: torch.nn.Module, task: TaskKind, height: int, width: int, kernel: int = 1
) -> tuple[int, int]:
    """Rows and columns to add to an ``height``×``width`` measurement so the network takes the restored size, which is
    also at least 2x2 at the network's deepest level (group norm of one pixel is undefined) and at least the
    operator's ``kernel`` side (a blur wider than its image has no circular model): tiny images are restored too."""
    scale = task.output_scale
    factor = getattr(unet, "downsample_factor", None) or 1
    multiple = math.lcm(factor, scale)
    smallest = -(-max(2 * factor, kernel) // multiple) * multiple

    def pad(side: int) -> int:
        return max(-(-side * scale // multiple) * multiple, smallest) // scale - side

    return pad(height), pad(width)


def image_seed(job_seed: int, image_id: str) -> int:
    """A 63-bit seed for one image, stable across runs, shard sizes and machines."""
    digest = hashlib.sha256(f"{job_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_seed(job_seed: int, image_id: str, sample: int) -> int:
    """The seed of posterior sample ``sample`` of one image: sample 0 is :func:`image_seed` (the plain job's
    restoration), the others are derived from (seed, id, sample) alike (no id holds a NUL, so none collides)."""
    return image_seed(job_seed, image_id if sample == 0 else f"{image_id}\x00sample {sample}")


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
    task: TaskKind,
    ids: list[str],
    degraded_u8: np.ndarray,
    storage_options: Mapping[str, Any],
    given: GivenData | None = None,
) -> ShardInputs:
    """Restore mode: the stored images are the measurements; operator data comes from the task's files
    (``given``, when already found by ``task.given``), images without usable data quarantined."""
    if given is None:
        given = task.given(ids, degraded_u8.shape[:3], storage_options)
    y = uint8_to_float(degraded_u8)
    return ShardInputs(ids, y, given.params, _sigmas(task, y, given.noise_sigma), dict(given.quarantined))


def _sigmas(task: TaskKind, y: torch.Tensor, given: list[float | str] | None) -> list[float] | None:
    """Per-image σ of a restore-mode shard: the manifest's where it has one; with ``noise_sigma: auto`` the
    estimate from each measurement (``estimate_noise_sigma``) elsewhere; None = the task's σ for every image."""
    if task.noise_sigma != AUTO_SIGMA:
        return None if given is None else [float(s) for s in given]
    estimates = estimate_noise_sigma(y)
    if given is None:
        return estimates
    return [
        estimate if sigma == AUTO_SIGMA else float(sigma) for sigma, estimate in zip(given, estimates, strict=True)
    ]


def restore_batchwise(
    unet: torch.nn.Module,
    inputs: ShardInputs,
    task: TaskKind,
    config: BaseModel,
    *,
    seed: int,
    batch_size: int,
    device: str,
    precision: str = "fp32",
    fit: Fit = Fit(),
    meter: ShardMeter | None = None,
    method: str = "diffpir",
) -> tuple[np.ndarray, int]:
    """Restore all images of ``inputs`` with ``method`` (``config`` is its config, ``sampling.methods``); returns
    (uint8 (n, H, W, 3), the batch size that fit in memory).

    A CUDA out-of-memory error halves the batch and retries that batch (down to 1 image) instead of
    failing the shard; the smaller batch size is kept for the rest of the shard. Quarantined images are not
    restored: their rows of the result are zeros. ``meter`` hears of every sampler step and finished batch.
    """
    if inputs.quarantined:
        kept = inputs.kept()
        height, width = inputs.y.shape[-2:]
        full = np.zeros((len(inputs.ids), height * task.output_scale, width * task.output_scale, 3), dtype=np.uint8)
        if not kept:
            return full, max(1, batch_size)
        restored, size = restore_batchwise(
            unet,
            inputs.select(kept),
            task,
            config,
            seed=seed,
            batch_size=batch_size,
            device=device,
            precision=precision,
            fit=fit,
            meter=meter,
            method=method,
        )
        full[kept] = restored
        return full, size
    network = fit.network(unet)
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
                restored = restore_batch(
                    network,
                    inputs.batch(start, stop),
                    task,
                    config,
                    seed=seed,
                    device=device,
                    pad=fit.pad,
                    method=method,
                    callback=None if meter is None else lambda step, a=start, b=stop: meter.step(a, b, step.i),
                )
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory at batch %d; retrying with batch size %d", stop - start, size)
            continue
        outputs.append(float_to_uint8(restored.float().cpu()))
        if meter is not None:
            meter.batch(start, stop)
        start = stop
    return np.concatenate(outputs), size


def restore_batch(
    unet: torch.nn.Module,
    inputs: ShardInputs,
    task: TaskKind,
    config: BaseModel,
    *,
    seed: int,
    device: str,
    pad: bool = True,
    method: str = "diffpir",
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """One batch through ``method``'s sampler with one generator per image; (B, 3, H, W) float, unclamped, at the
    images' own restored size (padded for the network and cropped back when ``pad``; an operator with a canvas, a
    non-circular boundary, fits the network by itself and is not padded). Per-image σ reach the configs that have a
    ``noise_sigma`` (DPS has none)."""
    samples = inputs.samples or [0] * len(inputs.ids)
    generators = [
        torch.Generator(device=device).manual_seed(sample_seed(seed, i, k))
        for i, k in zip(inputs.ids, samples, strict=True)
    ]
    height, width = inputs.y.shape[-2:]
    params = {k: v.to(device) for k, v in inputs.params.items()}
    y = inputs.y.to(device)
    operator = task.operator(params)
    if pad and operator.on_canvas(y) is operator:  # a canvas (non-circular boundary) already fits the network
        kernel = getattr(operator, "kernel", None)
        pad_h, pad_w = measurement_padding(unet, task, height, width, 1 if kernel is None else kernel.shape[-1])
        if pad_h or pad_w:
            operator = task.operator(task.pad_params(params, pad_h, pad_w))
            y = _reflect(y, pad_h, pad_w)
    if inputs.noise_sigma is not None and "noise_sigma" in type(config).model_fields:
        config = config.model_copy(update={"noise_sigma": list(inputs.noise_sigma)})
    restored = restore_with(method, unet, operator, y, config, generator=generators, callback=callback)
    return restored[..., : height * task.output_scale, : width * task.output_scale]
