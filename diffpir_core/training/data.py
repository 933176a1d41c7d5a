"""Training data that ships inside scikit-image: no download at any point.

The demo prior is trained on the photographs, micrographs and textures bundled in the scikit-image
wheel (``skimage.data``) and is evaluated on a fixed held-out set that never enters training.
Grayscale images are replicated to RGB; RGBA is composited on white.

Patches are drawn from a per-image pyramid of antialiased downscales so that the prior sees content at
the scale of the demo images (held-out photos with their short side reduced to 128 px, then cut into
64 x 64 tiles), with random crops, flips and 90-degree rotations (the 8 symmetries of the square).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import skimage.data
import torch
from skimage.color import gray2rgb
from skimage.transform import resize

#: Images the demo prior is trained on (names of ``skimage.data`` loaders; motorcycle_* from
#: ``stereo_motorcycle``).
TRAIN_IMAGES: tuple[str, ...] = (
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "colorwheel",
    "logo",
    "motorcycle_left",
    "motorcycle_right",
    "camera",
    "brick",
    "grass",
    "gravel",
    "page",
    "coins",
    "moon",
    "text",
    "clock",
    "cell",
    "microaneurysms",
)

#: Images never used in training: the demo and the quality check run on these. ``skimage.data.cat``
#: is the same photograph as ``chelsea`` and is therefore excluded from training as well.
HELD_OUT_IMAGES: tuple[str, ...] = ("astronaut", "coffee", "chelsea")

#: Short side (px) the held-out photos are reduced to before they are cut into demo tiles.
HELD_OUT_SHORT_SIDE = 128

_SPECIAL_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "motorcycle_left": lambda: skimage.data.stereo_motorcycle()[0],
    "motorcycle_right": lambda: skimage.data.stereo_motorcycle()[1],
}


def load_rgb_u8(name: str) -> np.ndarray:
    """Load a bundled ``skimage.data`` image by name as uint8 (H, W, 3) RGB."""
    loader = _SPECIAL_LOADERS.get(name) or getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"unknown skimage.data image {name!r}: use one of {sorted(TRAIN_IMAGES + HELD_OUT_IMAGES)}")
    image = np.asarray(loader())
    if image.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name} is {image.dtype}, expected uint8: pick another image")
    if image.ndim == 2:
        image = gray2rgb(image)
    elif image.shape[-1] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = np.round(image[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def downscale_u8(image: np.ndarray, factor: float) -> np.ndarray:
    """Antialiased downscale of a uint8 (H, W, 3) image by ``factor`` (<= 1)."""
    height, width = image.shape[:2]
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    out = resize(image, shape, order=3, anti_aliasing=factor < 1.0, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def held_out_tiles(
    size: int = 64, names: Sequence[str] = HELD_OUT_IMAGES, short_side: int | None = None
) -> dict[str, np.ndarray]:
    """Non-overlapping ``size`` x ``size`` uint8 tiles of the held-out photos, keyed ``name_k``.

    Each photo is downscaled to a short side of ``short_side`` (default 2 * ``size``) and cut row-major into whole
    tiles (astronaut: 4, coffee and chelsea: 6 each at size 64; 16, 24 and 24 at short side 256). Used by the
    quality check, the demo and the uncertainty bench.
    """
    tiles: dict[str, np.ndarray] = {}
    for name in names:
        image = load_rgb_u8(name)
        small = downscale_u8(image, (short_side or 2 * size) / min(image.shape[:2]))
        rows, cols = small.shape[0] // size, small.shape[1] // size
        for k in range(rows * cols):
            r, c = divmod(k, cols)
            tiles[f"{name}_{k}"] = small[r * size : (r + 1) * size, c * size : (c + 1) * size].copy()
    return tiles


def _pyramid(image: np.ndarray, crop: int, levels: int, short_sides: tuple[int, int]) -> list[np.ndarray]:
    """Downscales of ``image`` whose short sides are log-spaced in ``short_sides`` (never upscaled,
    never below ``crop``)."""
    short = min(image.shape[:2])
    lo = max(crop, min(short_sides[0], short))
    hi = max(lo, min(short_sides[1], short))
    targets = np.exp(np.linspace(math.log(lo), math.log(hi), levels))
    return [downscale_u8(image, float(t) / short) if t < short else image for t in np.unique(np.round(targets))]


class PatchSampler:
    """Random RGB patches in diffusion space [-1, 1] from a fixed image list; all randomness comes
    from the ``torch.Generator`` passed to :meth:`sample`, so a run is reproducible and resumable."""

    def __init__(
        self,
        names: Sequence[str] = TRAIN_IMAGES,
        crop: int = 32,
        levels: int = 6,
        short_sides: tuple[int, int] = (96, 384),
    ) -> None:
        overlap = set(names) & set(HELD_OUT_IMAGES)
        if overlap:
            raise ValueError(f"held-out images {sorted(overlap)} may not be used for training")
        self.names = tuple(names)
        self.crop = crop
        self.pyramids = [_pyramid(load_rgb_u8(n), crop, levels, short_sides) for n in self.names]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``batch`` patches (B, 3, crop, crop) float32 in [-1, 1]."""
        out = torch.empty(batch, 3, self.crop, self.crop)
        draws = torch.rand(batch, 5, generator=generator, dtype=torch.float64)
        for i, (u_img, u_lvl, u_y, u_x, u_sym) in enumerate(draws.tolist()):
            pyramid = self.pyramids[int(u_img * len(self.pyramids))]
            level = pyramid[int(u_lvl * len(pyramid))]
            y = int(u_y * (level.shape[0] - self.crop + 1))
            x = int(u_x * (level.shape[1] - self.crop + 1))
            patch = torch.from_numpy(level[y : y + self.crop, x : x + self.crop]).permute(2, 0, 1)
            sym = int(u_sym * 8)
            patch = torch.rot90(patch, sym % 4, dims=(1, 2))
            out[i] = patch.flip(2) if sym >= 4 else patch
        return out / 127.5 - 1.0
