"""Measurements of one shard: synthesised from ground truth (evaluate) or read as given (restore).

Evaluate mode degrades each ground-truth image with its own seed (derived from the job seed and the
image id), following the reference recipes (spec §4): SR = MATLAB-bicubic downscale; deblur = uint8
circular blur with a Gaussian (reference random std, or a fixed one) or motion kernel; inpainting = a
box or random mask; then AWGN. The measurements and operator parameters are stored next to the
restored images, so every restoration can be reproduced from the store alone.
"""

import io
from typing import Any

import fsspec
import numpy as np
import torch
from PIL import Image

from diffpir_core.job import BUILTIN_KERNELS, DeblurTask, InpaintTask, Job, SRTask
from diffpir_core.metrics import uint8_to_float
from diffpir_core.operators import imresize
from diffpir_core.operators.degrade import blur_uint8
from diffpir_core.operators.kernels import gaussian_kernel, motion_kernel, reference_gaussian_std
from diffpir_core.operators.masks import random_box_mask, random_mask
from diffpir_core.operators.noise import add_noise
from tasks.restoration import ShardInputs, image_seed


def degradation_seed(job_seed: int, image_id: str) -> int:
    """The 32-bit seed of one image's kernel, mask and noise (NumPy's legacy RNG takes 32 bits)."""
    return image_seed(job_seed, f"degrade:{image_id}") % (2**32)


def measurement_arrays(job: Job, height: int, width: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-image array shapes (without the image axis) and dtypes that evaluate mode stores for a size group."""
    task = job.task
    if isinstance(task, SRTask):
        return {"y": ((height // task.scale, width // task.scale, 3), "float32")}
    if isinstance(task, DeblurTask):
        size = task.kernel_size if task.kernel in BUILTIN_KERNELS else load_kernel(task.kernel, job.storage_options).shape[0]
        return {"y": ((height, width, 3), "float32"), "kernel": ((size, size), "float32")}
    return {"y": ((height, width, 3), "float32"), "mask": ((height, width), "uint8")}


def measurement_paths(job: Job, prefix: str, height: int, width: int) -> dict[str, str]:
    """``{"y": "<prefix>/y", "kernel" | "mask": ...}``: the stored measurement arrays of a size group."""
    return {name: f"{prefix}/{name}" for name in measurement_arrays(job, height, width)}


def synthesise(job: Job, ids: list[str], truth_u8: np.ndarray) -> dict[str, np.ndarray]:
    """Degrade ground truth (n, H, W, 3) uint8: ``y`` (n, h, w, 3) float32 plus ``kernel`` or ``mask``."""
    task = job.task
    seeds = [degradation_seed(job.seed, i) for i in ids]
    n, height, width = truth_u8.shape[:3]
    if isinstance(task, SRTask):
        _check_multiple(height, width, task.scale)
        y = imresize(uint8_to_float(truth_u8), 1.0 / task.scale)
        extra: dict[str, np.ndarray] = {}
    elif isinstance(task, DeblurTask):
        kernels = torch.stack([_kernel(task, job, s) for s in seeds])
        y = blur_uint8(truth_u8, kernels).permute(0, 3, 1, 2).float() / 255.0
        extra = {"kernel": kernels.numpy().astype(np.float32)}
    else:
        masks = torch.stack([_mask(task, job, height, width, s) for s in seeds])
        y = uint8_to_float(truth_u8) * masks[:, None]
        extra = {"mask": masks.numpy().astype(np.uint8)}
    if task.noise_sigma > 0:
        y = add_noise(y, task.noise_sigma, seeds)
    return {"y": y.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32), **extra}


def inputs_from_arrays(ids: list[str], arrays: dict[str, np.ndarray]) -> ShardInputs:
    """Stored evaluate-mode arrays as sampler inputs: y channels-first, per-image kernels and masks."""
    params: dict[str, torch.Tensor] = {}
    if "kernel" in arrays:
        params["kernel"] = torch.from_numpy(np.ascontiguousarray(arrays["kernel"], dtype=np.float32))
    if "mask" in arrays:
        params["mask"] = torch.from_numpy(arrays["mask"].astype(np.float32))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(arrays["y"].transpose(0, 3, 1, 2), dtype=np.float32))
    return ShardInputs(ids=ids, y=y, params=params)


def inputs_as_given(job: Job, ids: list[str], degraded_u8: np.ndarray) -> ShardInputs:
    """Restore mode: the stored images are the measurements; the kernel or mask comes from the job's file."""
    task = job.task
    params: dict[str, torch.Tensor] = {}
    if isinstance(task, DeblurTask):
        params["kernel"] = torch.from_numpy(load_kernel(task.kernel, job.storage_options))
    elif isinstance(task, InpaintTask):
        mask = load_mask(task.mask, job.storage_options)
        if mask.shape != degraded_u8.shape[1:3]:
            raise ValueError(
                f"task.mask {task.mask} is {mask.shape[1]}x{mask.shape[0]} but the images are "
                f"{degraded_u8.shape[2]}x{degraded_u8.shape[1]}; give a mask of the image size"
            )
        params["mask"] = torch.from_numpy(mask.astype(np.float32))
    return ShardInputs(ids=ids, y=uint8_to_float(degraded_u8), params=params)


def load_kernel(uri: str, storage_options: dict[str, Any]) -> np.ndarray:
    """A blur kernel file: ``.npy`` (2-D float) or a grayscale image; normalised to sum 1, float32."""
    data = _read_bytes(uri, storage_options)
    if uri.endswith(".npy"):
        kernel = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float64)
    else:
        with Image.open(io.BytesIO(data)) as img:
            kernel = np.asarray(img.convert("L"), dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.sum() <= 0:
        raise ValueError(f"task.kernel {uri}: need a square 2-D kernel with a positive sum, got shape {kernel.shape}")
    return (kernel / kernel.sum()).astype(np.float32)


def load_mask(uri: str, storage_options: dict[str, Any]) -> np.ndarray:
    """A mask image (white = known pixel, threshold 128) as uint8 (H, W) of 0/1."""
    with Image.open(io.BytesIO(_read_bytes(uri, storage_options))) as img:
        return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)


def _read_bytes(uri: str, storage_options: dict[str, Any]) -> bytes:
    try:
        with fsspec.open(uri, "rb", **({} if "://" not in uri else storage_options)) as handle:
            return handle.read()
    except FileNotFoundError:
        raise ValueError(f"{uri} does not exist; fix the path in the job's task section") from None


def _kernel(task: DeblurTask, job: Job, seed: int) -> torch.Tensor:
    if task.kernel == "gaussian":
        std = task.kernel_std if task.kernel_std is not None else reference_gaussian_std(seed)
        return gaussian_kernel(task.kernel_size, std)
    if task.kernel == "motion":
        return motion_kernel(seed, size=task.kernel_size)
    return torch.from_numpy(load_kernel(task.kernel, job.storage_options))


def _mask(task: InpaintTask, job: Job, height: int, width: int, seed: int) -> torch.Tensor:
    if task.mask == "random":
        return random_mask(height, width, seed=seed, known_fraction=1.0 - task.mask_ratio)
    if task.mask == "box":
        side = max(1, round(min(height, width) * task.box_fraction))
        margin = (height // 16, width // 16)
        return random_box_mask(height, width, seed=seed, length=(side, side + 1), margin=margin)
    mask = torch.from_numpy(load_mask(task.mask, job.storage_options).astype(np.float32))
    if tuple(mask.shape) != (height, width):
        raise ValueError(f"task.mask {task.mask} is {tuple(mask.shape)}, the images are {(height, width)}")
    return mask


def _check_multiple(height: int, width: int, scale: int) -> None:
    if height % scale or width % scale:
        raise ValueError(
            f"images of {height}x{width} are not a multiple of the SR scale {scale}; "
            f"set ingest.size_policy: modcrop (ingest.multiple a multiple of {scale})"
        )

