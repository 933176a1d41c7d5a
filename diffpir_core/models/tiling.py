"""Tiled network evaluation for images larger than the prior was trained on (MultiDiffusion-style).

Inside every sampler step the network sees overlapping tiles of the current x_t (at most ``tile`` pixels
on a side, the prior's training size by default), and the per-pixel outputs of overlapping tiles are
averaged with smooth weights (Bar-Tal et al. 2023, "MultiDiffusion", average of overlapping
predictions; a raised-cosine ramp over the overlap instead of their uniform average, which hides the
tile borders). The data step is then solved on the whole image, so the measurement stays consistent
across tiles. Memory is bounded by ``tile_batch`` tiles, not by the image size; the result depends only
on the image and the settings, not on the batch it came in.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` overlap."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@lru_cache(maxsize=64)
def _ramp(tile: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """1-D blending weight: raised cosine over ``overlap`` pixels at inner edges, 1 elsewhere, never 0."""
    weight = torch.ones(tile, dtype=torch.float64)
    if overlap > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap)
        if not first:
            weight[:overlap] = rise
        if not last:
            weight[-overlap:] = rise.flip(0)
    return weight


Layout = tuple[list[tuple[int, int, int, int]], list[torch.Tensor], torch.Tensor]
"""Tile windows (top, left, h, w), their blending weights, and the weights' per-pixel sum."""


def _crop(image: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, height, width = window
    return image[:, top : top + height, left : left + width]


class TiledUNet(nn.Module):
    """``unet(x, t)`` on overlapping tiles of x, blended; a pass-through for x no larger than a tile."""

    def __init__(self, unet: nn.Module, tile: int, overlap: int, tile_batch: int = 8) -> None:
        super().__init__()
        factor = getattr(unet, "downsample_factor", None) or 1
        if tile % factor:
            raise ValueError(f"tile {tile} must be a multiple of the UNet's downsampling factor {factor}")
        if not 0 <= overlap < tile:
            raise ValueError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
        self.unet, self.tile, self.overlap, self.tile_batch = unet, tile, overlap, max(1, tile_batch)
        self.downsample_factor = getattr(unet, "downsample_factor", None)
        self._layouts: dict[tuple[int, int], Layout] = {}

    def _layout(self, height: int, width: int) -> Layout:
        """Tile windows (top, left, h, w), their blending weights and the weights' sum, computed once per image size
        rather than at every sampler step."""
        if (height, width) not in self._layouts:
            self._layouts[(height, width)] = self._new_layout(height, width)
        return self._layouts[(height, width)]

    def _new_layout(self, height: int, width: int) -> Layout:
        th, tw = min(self.tile, height), min(self.tile, width)
        tops, lefts = tile_starts(height, th, self.overlap), tile_starts(width, tw, self.overlap)
        windows = [(top, left, th, tw) for top in tops for left in lefts]
        weights = [
            _ramp(th, self.overlap, top == tops[0], top == tops[-1])[:, None]
            * _ramp(tw, self.overlap, left == lefts[0], left == lefts[-1])[None, :]
            for top, left, _, _ in windows
        ]
        total = torch.zeros(height, width, dtype=torch.float64)
        for (top, left, _, _), weight in zip(windows, weights, strict=True):
            total[top : top + th, left : left + tw] += weight
        return windows, weights, total

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        if height <= self.tile and width <= self.tile:
            return self.unet(x, t)
        windows, weights, total = self._layout(height, width)
        jobs = [(b, k) for b in range(batch) for k in range(len(windows))]
        out: torch.Tensor | None = None
        for first in range(0, len(jobs), self.tile_batch):
            chunk = jobs[first : first + self.tile_batch]
            tiles = torch.stack([_crop(x[b], windows[k]) for b, k in chunk])
            pred = self.unet(tiles, t[[b for b, _ in chunk]])
            if out is None:
                out = torch.zeros(batch, pred.shape[1], height, width, dtype=torch.float64, device=x.device)
            for i, (b, k) in enumerate(chunk):
                top, left, th, tw = windows[k]
                out[b, :, top : top + th, left : left + tw] += weights[k].to(x.device) * pred[i].double()
        assert out is not None
        return (out / total.to(x.device)).to(x.dtype)
