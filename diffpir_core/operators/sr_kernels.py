"""Our SR data-step kernels: the blur k whose (k ⊛ x)[::sf, ::sf] best matches MATLAB-bicubic
downscaling (``imresize(x, 1/sf)``), fitted by least squares away from the image border.

The FFT data step (docs/algorithm.md §5.2) needs the degradation as "circular blur, then keep pixel (0, 0) of
each sf x sf cell"; bicubic downscaling has that form in the image interior, with the kernel's peak
shifted by -(sf - 1) / 2 for the half-pixel offset. The reference ships its own kernels in a ``.mat``
file that we do not copy; ours are fitted here, stored in ``data/bicubic_kernels.npz``
(regenerate with ``python -m diffpir_core.operators.make_sr_kernels``), and recomputed on first use if the
file is missing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .resize import imresize

SCALES = (2, 3, 4, 8)
KERNEL_SIZES = {2: 25, 3: 25, 4: 25, 8: 41}
"""25 x 25 (the reference size) covers the 4·sf bicubic taps for sf <= 4; x8 needs 41 x 41."""
DATA_FILE = Path(__file__).with_name("data") / "bicubic_kernels.npz"


def check_scale(sf: int) -> int:
    """Return sf if it is a supported SR scale, else raise with the supported list."""
    if sf not in SCALES:
        raise ValueError(f"SR scale must be one of {SCALES}, got {sf!r}")
    return int(sf)


def fit_bicubic_kernel(sf: int, size: int | None = None, images: int = 2, seed: int = 0) -> np.ndarray:
    """Least-squares kernel (size, size), float64, mapping random images to their interior imresize outputs."""
    check_scale(sf)
    size = size or KERNEL_SIZES[sf]
    centre = size // 2
    side = 64 * sf
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 1, side, side, generator=gen, dtype=torch.float64)
    y = imresize(x, 1 / sf)
    # Output i samples input sf*i + c - m for kernel tap m; keep i whose taps and whose bicubic
    # support (centre sf*i + (sf-1)/2, radius 2 sf) both stay inside the image.
    n_out = y.shape[-1]
    idx = [
        i
        for i in range(n_out)
        if sf * i + centre - (size - 1) >= 0
        and sf * i + centre < side
        and sf * i + (sf - 1) / 2 - 2 * sf >= 0
        and sf * i + (sf - 1) / 2 + 2 * sf <= side - 1
    ]
    first = sf * idx[0] + centre - (size - 1)
    count = len(idx)
    shifted = x[..., first:, first:]
    patches = shifted.unfold(-2, size, sf).unfold(-2, size, sf)[:, :, :count, :count]
    design = patches.reshape(-1, size * size)
    target = y[:, :, idx[0] : idx[0] + count, idx[0] : idx[0] + count].reshape(-1, 1)
    solution = torch.linalg.lstsq(design, target).solution.reshape(size, size)
    return torch.flip(solution, dims=(0, 1)).numpy()


def write_kernel_file(path: Path = DATA_FILE) -> Path:
    """Fit the kernels for every scale and store them as ``x{sf}`` arrays in an ``.npz`` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"x{sf}": fit_bicubic_kernel(sf) for sf in SCALES})
    return path


@cache
def _cached_kernel(sf: int) -> np.ndarray:
    if DATA_FILE.is_file():
        with np.load(DATA_FILE) as data:
            if f"x{sf}" in data:
                return data[f"x{sf}"]
    return fit_bicubic_kernel(sf)


def bicubic_kernel(sf: int) -> Tensor:
    """Our float64 SR kernel for scale sf (2, 3, 4 or 8) approximating MATLAB-bicubic downscaling."""
    return torch.from_numpy(_cached_kernel(check_scale(sf)).copy())
