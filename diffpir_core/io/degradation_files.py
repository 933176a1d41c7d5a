"""Blur kernels and masks given as files (local or any fsspec URL): the task's ``kernel`` / ``mask``."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from diffpir_core.io.uris import filesystem, join, redact_uri


def read_bytes(uri: str, storage_options: Mapping[str, Any]) -> bytes:
    """The bytes of ``uri``; a missing file is a ``ValueError`` that says to fix the job's path."""
    try:
        with fsspec.open(uri, "rb", **({} if "://" not in uri else dict(storage_options))) as handle:
            return handle.read()
    except FileNotFoundError:
        raise ValueError(f"{uri} does not exist; fix the path in the job's task section") from None
    except IsADirectoryError:
        raise ValueError(
            f"{uri} is a folder: one file per image is for mode restore; evaluate mode takes one file"
        ) from None


def file_digest(uri: str, storage_options: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the file's bytes: what identifies a kernel or mask file (not its path)."""
    return "sha256:" + hashlib.sha256(read_bytes(uri, storage_options)).hexdigest()


def load_kernel(uri: str, storage_options: Mapping[str, Any]) -> np.ndarray:
    """A blur kernel file: ``.npy`` (2-D float) or a grayscale image; normalised to sum 1, float32."""
    return kernel_from_bytes(uri, read_bytes(uri, storage_options))


def load_mask(uri: str, storage_options: Mapping[str, Any]) -> np.ndarray:
    """A mask image (white = known pixel, threshold 128) as uint8 (H, W) of 0/1; ``ValueError`` naming the file when
    it is not an image."""
    try:
        with Image.open(io.BytesIO(read_bytes(uri, storage_options))) as img:
            return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)
    except UnidentifiedImageError:
        raise ValueError(
            f"task.mask {redact_uri(uri)}: not an image file; replace it with a PNG or JPEG mask (white = known pixel)"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Per-image kernels and masks: a folder/prefix with one file per image id, or a CSV/Parquet manifest.

MANIFEST_EXTENSIONS = (".csv", ".parquet")
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class PerImageFile:
    """What one image's kernel or mask resolved to: its file and bytes, or why it has none; the manifest's σ."""

    uri: str | None
    data: bytes | None
    noise_sigma: float | None = None
    reason: str | None = None


def is_manifest(uri: str) -> bool:
    """True when ``uri`` names a CSV/Parquet manifest (``id, <kind>_uri, noise_sigma``)."""
    return uri.lower().endswith(MANIFEST_EXTENSIONS)


def is_per_image(uri: str, storage_options: Mapping[str, Any]) -> bool:
    """True when ``uri`` is a manifest or a folder/prefix (one file per image id), not one shared file."""
    if is_manifest(uri):
        return True
    fs, path = filesystem(uri, storage_options)
    return fs.isdir(path)


def _read_manifest(uri: str, column: str, storage_options: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Rows of a manifest by id (columns ``id``, ``column``, optional ``noise_sigma``), as text cells."""
    data = read_bytes(uri, storage_options)
    if uri.lower().endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(
                f"{uri}: reading a Parquet manifest needs pyarrow (pip install pyarrow), or give a CSV"
            ) from None
        table = pq.read_table(io.BytesIO(data)).to_pylist()
        rows = [{k: ("" if v is None else str(v)) for k, v in row.items()} for row in table]
        fields = list(table[0]) if table else []
    else:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
        fields = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in ("id", column) if name not in fields]
    if missing:
        raise ValueError(
            f"manifest {uri} lacks column(s) {missing}: need id, {column} and optionally noise_sigma; has {fields}"
        )
    by_id: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["id"] in by_id:
            raise ValueError(f"manifest {uri} lists id {row['id']!r} more than once; give one row per image")
        by_id[row["id"]] = row
    return by_id


def check_manifest(uri: str, column: str, storage_options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when the manifest cannot be read or lacks its columns (before any shard runs)."""
    _read_manifest(uri, column, storage_options)


def _resolve(base: str, target: str) -> str:
    """A manifest cell: absolute path or URL as it is, else relative to the manifest's folder."""
    if "://" in target or target.startswith("/"):
        return target
    return join(base.rsplit("/", 1)[0], target)


def per_image_files(
    uri: str, ids: Sequence[str], column: str, extensions: Collection[str], storage_options: Mapping[str, Any]
) -> dict[str, PerImageFile]:
    """Each image's file (and manifest σ) under the folder/prefix or manifest ``uri``, read; missing, ambiguous or
    unreadable files and bad σ cells come back with a ``reason`` instead of data (the image is then quarantined).

    Folder: the file of id ``sub/a.jpg`` is ``<uri>/sub/a.<ext>`` for one ``ext`` of ``extensions``.
    Manifest: the row of the id; ``column`` holds the file (relative to the manifest's folder), ``noise_sigma``
    (optional, empty = the task's) the image's noise level.
    """
    wanted: dict[str, tuple[str | None, float | None, str | None]] = {}
    if is_manifest(uri):
        rows = _read_manifest(uri, column, storage_options)
        for image_id in ids:
            row = rows.get(image_id)
            if row is None:
                wanted[image_id] = (None, None, f"no row for this id in the manifest {redact_uri(uri)}")
                continue
            sigma, reason = None, None
            if row.get("noise_sigma"):
                try:
                    sigma = float(row["noise_sigma"])
                    if not 0.0 <= sigma < 1.0:
                        raise ValueError
                except ValueError:
                    sigma, reason = (
                        None,
                        f"noise_sigma {row['noise_sigma']!r} in the manifest is not a number in [0, 1)",
                    )
            if not row[column]:
                reason = reason or f"empty {column} in the manifest {redact_uri(uri)}"
            wanted[image_id] = (None if reason else _resolve(uri, row[column]), sigma, reason)
    else:
        fs, root = filesystem(uri, storage_options)
        listings: dict[str, dict[str, list[str]]] = {}
        for image_id in ids:
            parent, _, name = image_id.rpartition("/")
            if parent not in listings:
                folder = join(root, parent) if parent else root
                try:
                    fs.invalidate_cache(folder)
                    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
                except FileNotFoundError:
                    names = []
                stems: dict[str, list[str]] = {}
                for file_name in names:
                    stem, ext = posixpath.splitext(file_name)
                    if ext.lower() in extensions:
                        stems.setdefault(stem, []).append(file_name)
                listings[parent] = stems
            stem = posixpath.splitext(name)[0]
            found = sorted(listings[parent].get(stem, []))
            prefix = f"{parent}/" if parent else ""
            if not found:
                choices = "|".join(sorted(e.lstrip(".") for e in extensions))
                reason = f"no file {prefix}{stem}.<{choices}> in {redact_uri(uri)}"
                wanted[image_id] = (None, None, reason)
            elif len(found) > 1:
                wanted[image_id] = (None, None, f"several files for this id in {redact_uri(uri)}: {found}; keep one")
            else:
                wanted[image_id] = (join(uri, prefix + found[0]), None, None)
    resolved: dict[str, PerImageFile] = {}
    for image_id, (file_uri, sigma, reason) in wanted.items():
        data = None
        if file_uri is not None:
            try:
                data = read_bytes(file_uri, storage_options)
            except (ValueError, OSError) as err:
                reason = f"cannot read {redact_uri(file_uri)}: {err}"
        resolved[image_id] = PerImageFile(file_uri, data, sigma, reason)
    return resolved


def per_image_digest(files: Mapping[str, PerImageFile]) -> str:
    """``sha256:<hex>`` over each image's file bytes (not its path), manifest σ and quarantine reason."""
    digest = hashlib.sha256()
    for image_id in sorted(files):
        entry = files[image_id]
        content = hashlib.sha256(entry.data).hexdigest() if entry.data is not None else None
        digest.update(json.dumps([image_id, content, entry.noise_sigma, entry.reason]).encode())
    return "sha256:" + digest.hexdigest()


def kernel_from_bytes(uri: str, data: bytes) -> np.ndarray:
    """A kernel file's bytes (``.npy`` or a grayscale image) as a square kernel summing to 1, float32; a
    ``ValueError`` naming the file and what is wrong with it (not an array, not square, NaN, all zero, ...)."""
    name = f"kernel {redact_uri(uri)}"
    if uri.lower().endswith(".npy"):
        kernel = _npy_array(name, data)
    else:
        with Image.open(io.BytesIO(data)) as img:
            kernel = np.asarray(img.convert("L"), dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(
            f"{name} has shape {kernel.shape}; a blur kernel is a square 2-D array (odd side, e.g. 25x25)"
        )
    if not np.isfinite(kernel).all():
        bad = int((~np.isfinite(kernel)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s); give a kernel of finite numbers")
    if not kernel.any():
        raise ValueError(f"{name} is all zero; a blur kernel needs positive weights (it is normalised to sum 1)")
    if kernel.sum() <= 0:
        raise ValueError(
            f"{name} sums to {kernel.sum():.3g}; a blur kernel needs a positive sum (it is normalised to 1)"
        )
    return (kernel / kernel.sum()).astype(np.float32)


def _npy_array(name: str, data: bytes) -> np.ndarray:
    """The numeric array of a ``.npy`` file's bytes; a ``ValueError`` naming the file when it is no ``.npy`` file
    (a text file renamed, a truncated download) or holds Python objects rather than numbers."""
    if not data.startswith(NPY_MAGIC):
        raise ValueError(
            f"{name} is not a NumPy .npy file (it lacks the .npy header, e.g. a text or CSV file renamed); "
            "write the array with numpy.save, or give the kernel as a grayscale image"
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{name} holds Python objects, not numbers; save a float array with numpy.save") from None
        raise ValueError(f"{name} has a damaged .npy header ({err}); write it again with numpy.save") from None
    except EOFError:
        raise ValueError(f"{name} is truncated (fewer bytes than its .npy header announces); write it again") from None
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} holds {array.dtype} values, not numbers; save a float array")
    return array.astype(np.float64)


def check_kernel_fits(uri: str, kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """``kernel`` when it fits an image of ``height``×``width``; else a ``ValueError`` naming the file and both sizes
    (a blur wider than its image describes no camera; the operators refuse it)."""
    side = kernel.shape[0]
    if side > min(height, width):
        raise ValueError(
            f"kernel {redact_uri(uri)} is {side}x{side}, larger than its {width}x{height} image; "
            f"give a kernel of at most {min(height, width)}x{min(height, width)} pixels (crop its zero border)"
        )
    return kernel


def mask_from_bytes(data: bytes) -> np.ndarray:
    """A mask image's bytes (white = known pixel, threshold 128) as uint8 (H, W) of 0/1."""
    with Image.open(io.BytesIO(data)) as img:
        return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)


def check_known_pixels(uri: str, mask: np.ndarray) -> np.ndarray:
    """``mask`` when it has a known (white) pixel; else a ``ValueError`` naming the file ``uri``: a mask with none
    leaves nothing of the image to restore from (and no baseline can interpolate)."""
    if not mask.any():
        raise ValueError(
            f"mask {redact_uri(uri)} has no known pixel (all black, white = known); give the mask of the pixels the "
            "image holds"
        )
    return mask


def pad_kernels(kernels: Sequence[np.ndarray]) -> np.ndarray:
    """Kernels of different sizes zero-padded to one odd size, each centred (its centre pixel ``k // 2`` lands on the
    common centre), so the blur each one describes is unchanged; (n, K, K) float32."""
    size = max(k.shape[0] for k in kernels)
    size += 1 - size % 2
    out = np.zeros((len(kernels), size, size), dtype=np.float32)
    for i, kernel in enumerate(kernels):
        before = size // 2 - kernel.shape[0] // 2
        out[i, before : before + kernel.shape[0], before : before + kernel.shape[1]] = kernel
    return out
