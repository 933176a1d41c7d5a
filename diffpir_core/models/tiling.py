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

import torch
from torch import nn


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` overlap."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


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

    def _windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        th, tw = min(self.tile, height), min(self.tile, width)
        return [(top, left, th, tw) for top in tile_starts(height, th, self.overlap)
                for left in tile_starts(width, tw, self.overlap)]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        if height <= self.tile and width <= self.tile:
            return self.unet(x, t)
        windows = self._windows(height, width)
        tops = sorted({w[0] for w in windows})
        lefts = sorted({w[1] for w in windows})
        jobs = [(b, w) for b in range(batch) for w in windows]
        out: torch.Tensor | None = None
        total = torch.zeros(1, 1, height, width, dtype=torch.float64, device=x.device)
        for first in range(0, len(jobs), self.tile_batch):
            chunk = jobs[first:first + self.tile_batch]
            tiles = torch.stack([x[b, :, top:top + th, left:left + tw] for b, (top, left, th, tw) in chunk])
            pred = self.unet(tiles, t[[b for b, _ in chunk]])
            if out is None:
                out = torch.zeros(batch, pred.shape[1], height, width, dtype=torch.float64, device=x.device)
            for k, (b, (top, left, th, tw)) in enumerate(chunk):
                weight = (_ramp(th, self.overlap, top == tops[0], top == tops[-1])[:, None]
                          * _ramp(tw, self.overlap, left == lefts[0], left == lefts[-1])[None, :]).to(x.device)
                out[b, :, top:top + th, left:left + tw] += weight * pred[k].double()
                if b == 0:
                    total[0, 0, top:top + th, left:left + tw] += weight
        assert out is not None
        return (out / total).to(x.dtype)
