"""Size policies: how images of any size become arrays the UNet can take, without silent distortion.

- ``pad`` (the default): pixels untouched, grouped by size; restoration pads each measurement to the
  sizes the UNet takes (reflect; masks padded as unknown) and crops the result back, so every image comes
  back at exactly its input size (× scale for SR).
- ``native``: pixels untouched; images are grouped by size (one array per size group). Sizes must already
  suit the UNet (multiples of its downsampling factor, 32 for the 256² priors): restoration refuses other
  groups as a permanent shard error that names the size and the fix (``modcrop``/``center_crop``/``resize``).
- ``modcrop``: crop the bottom/right edge so height and width are multiples of ``multiple`` (as in KAIR's modcrop).
- ``center_crop``: the central ``size`` x ``size`` window; images smaller than ``size`` on a side are
  reflect-padded to it (the original shape is stored, so the padding is known and can be removed).
- ``resize``: the shorter side is scaled to ``size`` (bicubic, aspect ratio kept), then center-cropped to a square.

Nothing ever changes the aspect ratio of the content.
"""

from enum import Enum

import numpy as np
from PIL import Image


class SizePolicy(str, Enum):
    """How ingest brings images to a working size (see the module docstring)."""

    PAD = "pad"
    NATIVE = "native"
    MODCROP = "modcrop"
    CENTER_CROP = "center_crop"
    RESIZE = "resize"


def validate_size_options(policy: SizePolicy, size: int | None, multiple: int) -> None:
    """Raise ``ValueError`` with a fix when the options do not fit the policy."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if policy in (SizePolicy.CENTER_CROP, SizePolicy.RESIZE):
        if size is None or size < 1:
            raise ValueError(f"size policy {policy.value!r} needs a positive size (e.g. size=256), got {size}")
        if size % multiple:
            raise ValueError(f"size={size} is not a multiple of multiple={multiple}; pick a size divisible by it")


def apply_size_policy(image: np.ndarray, policy: SizePolicy, size: int | None = None, multiple: int = 1) -> np.ndarray:
    """Bring an (H, W, 3) ``uint8`` image to the working size of ``policy``."""
    if policy in (SizePolicy.PAD, SizePolicy.NATIVE):
        return image
    if policy is SizePolicy.MODCROP:
        height, width = image.shape[0] - image.shape[0] % multiple, image.shape[1] - image.shape[1] % multiple
        if height == 0 or width == 0:
            raise ValueError(f"image {image.shape[:2]} is smaller than multiple={multiple}; modcrop leaves nothing")
        return image[:height, :width]
    assert size is not None
    if policy is SizePolicy.RESIZE:
        image = _resize_shorter_side(image, size)
    return _center_crop_or_pad(image, size)


def _resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = size / min(height, width)
    target = (max(size, round(width * scale)), max(size, round(height * scale)))
    if target == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize(target, Image.Resampling.BICUBIC))


def _center_crop_or_pad(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    pad_y, pad_x = max(0, size - height), max(0, size - width)
    if pad_y or pad_x:
        pad = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0))
        image = np.pad(image, pad, mode="reflect" if min(height, width) > 1 else "edge")
        height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])
