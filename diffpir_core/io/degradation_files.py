"""Blur kernels and masks given as files (local or any fsspec URL): the task's ``kernel`` / ``mask``."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import fsspec
import numpy as np
from PIL import Image


def read_bytes(uri: str, storage_options: Mapping[str, Any]) -> bytes:
    """The bytes of ``uri``; a missing file is a ``ValueError`` that says to fix the job's path."""
    try:
        with fsspec.open(uri, "rb", **({} if "://" not in uri else dict(storage_options))) as handle:
            return handle.read()
    except FileNotFoundError:
        raise ValueError(f"{uri} does not exist; fix the path in the job's task section") from None


def file_digest(uri: str, storage_options: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the file's bytes: what identifies a kernel or mask file (not its path)."""
    return "sha256:" + hashlib.sha256(read_bytes(uri, storage_options)).hexdigest()


def load_kernel(uri: str, storage_options: Mapping[str, Any]) -> np.ndarray:
    """A blur kernel file: ``.npy`` (2-D float) or a grayscale image; normalised to sum 1, float32."""
    data = read_bytes(uri, storage_options)
    if uri.endswith(".npy"):
        kernel = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float64)
    else:
        with Image.open(io.BytesIO(data)) as img:
            kernel = np.asarray(img.convert("L"), dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.sum() <= 0:
        raise ValueError(f"task.kernel {uri}: need a square 2-D kernel with a positive sum, got shape {kernel.shape}")
    return (kernel / kernel.sum()).astype(np.float32)


def load_mask(uri: str, storage_options: Mapping[str, Any]) -> np.ndarray:
    """A mask image (white = known pixel, threshold 128) as uint8 (H, W) of 0/1."""
    with Image.open(io.BytesIO(read_bytes(uri, storage_options))) as img:
        return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)
