"""DiffPIR sampler speed against the reference's per-image loop: images/s and the loop's own cost per image.

Three paths on the same real tiles (held-out 64×64 photos, Gaussian deblurring, σ = 0.05, the ``deblur``
preset at ``--nfe`` steps), run interleaved in one process so that machine load hits them alike:

* ``reference loop`` — the reference's per-image loop (``bench/reference_loop.py``), one image at a time;
* ``reference numerics`` — ``diffpir_sample(numerics="reference")``: bit for bit the reference's numbers;
* ``fast (default)`` — ``diffpir_sample`` with default settings (SDPA attention, channels-last).

Each path runs with the prior (``--model``: the bundled ``demo``, or the FFHQ 256 architecture with random
weights for GPUs) and with an all-zeros network of the same output shape: the
second gives the loop's own cost (data step, noise, schedule arithmetic, copies) per image. The speed-up is
images/s over the reference loop's at the same batch of tiles. State the thread count (``--threads``, default 1)
and the load with the numbers. Prints a table, writes ``bench/results/sampler.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from bench.reference_loop import reference_loop
from bench.results import write_results
from diffpir_core.models import PRESETS, load_prior, random_unet
from diffpir_core.operators import Blur, gaussian_kernel
from diffpir_core.sampling import DiffPIRConfig, diffpir_sample
from diffpir_core.sampling.common import set_network_numerics
from diffpir_core.task_kinds import task_preset
from diffpir_core.training.data import held_out_tiles

PATHS = ("reference loop", "reference numerics", "fast (default)")


class ZeroUNet(nn.Module):
    """An ε-network that returns zeros of the prior's output shape: what remains is the sampler's own cost."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.out_channels = unet.out_channels
        self.downsample_factor = unet.downsample_factor

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0], self.out_channels, *x.shape[2:]))


@dataclass
class Row:
    network: str
    path: str
    batch: int
    nfe: int
    seconds: float
    images_per_s: float
    ms_per_image: float
    speedup_vs_reference_loop: float


def _tiles(count: int, size: int) -> torch.Tensor:
    tiles = list(held_out_tiles(size).values())[:count]
    return torch.stack([torch.from_numpy(t).permute(2, 0, 1).float() / 255 for t in tiles])


def _prior(name: str, device: torch.device) -> nn.Module:
    """The bundled prior, or the FFHQ 256 architecture with seeded random weights (no download needed)."""
    unet = load_prior("demo").unet if name == "demo" else random_unet(0, **PRESETS["ffhq_256"].config)
    return unet.eval().to(device)


def _run_path(path: str, unet: nn.Module, y: torch.Tensor, batch: int, config: DiffPIRConfig) -> None:
    """Restore all of ``y`` by ``path``, ``batch`` images per sampler call, one seed per image."""
    op = Blur(gaussian_kernel(61, 3.0))
    if path == "reference loop":
        set_network_numerics(unet, "reference")
        reference_loop(unet, [op] * len(y), y, config, list(range(len(y))))
        return
    numerics = "reference" if path == "reference numerics" else config.numerics
    for start in range(0, len(y), batch):
        chunk = y[start : start + batch]
        generators = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        diffpir_sample(unet, op, chunk, config.model_copy(update={"numerics": numerics}), generator=generators)


def measure(
    networks: dict[str, nn.Module],
    y: torch.Tensor,
    batches: list[int],
    config: DiffPIRConfig,
    repeats: int,
    run_path: Callable[[str, nn.Module, torch.Tensor, int, DiffPIRConfig], None] = _run_path,
) -> list[Row]:
    """Median seconds of each (network, batch, path) over ``repeats`` rounds, the paths interleaved in each."""
    times: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(repeats):
        for name, unet in networks.items():
            for batch in batches:
                for path in PATHS:
                    start = time.perf_counter()
                    run_path(path, unet, y, batch, config)
                    times.setdefault((name, batch, path), []).append(time.perf_counter() - start)
    rows = []
    for (name, batch, path), seconds in times.items():
        median = statistics.median(seconds)
        reference = statistics.median(times[(name, batch, PATHS[0])])
        images = len(y)
        rows.append(
            Row(name, path, batch, config.nfes, median, images / median, 1000 * median / images, reference / median)
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--model", choices=["demo", "ffhq_256"], default="demo", help="ffhq_256: random weights, 256² tiles"
    )
    parser.add_argument("--networks", nargs="+", choices=["prior", "zeros"], default=["prior", "zeros"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--images", type=int, default=8, help="real tiles restored per path")
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="images per sampler call (4: the jobs' default batch_size)",
    )
    parser.add_argument("--nfe", type=int, default=100, help="sampling steps (the deblur preset's 100 by default)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the median is reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "sampler.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    prior = _prior(args.model, device)
    networks = {name: net for name, net in (("prior", prior), ("zeros", ZeroUNet(prior))) if name in args.networks}
    config = task_preset("deblur", iter_num=args.nfe)
    y_clean = _tiles(args.images, 64 if args.model == "demo" else 256)
    op = Blur(gaussian_kernel(61, 3.0))
    y = (op.A(y_clean) + 0.05 * torch.randn(y_clean.shape, generator=torch.Generator().manual_seed(1))).to(device)
    _run_path("fast (default)", prior, y[:1], 1, config.model_copy(update={"iter_num": 2}))  # warm-up
    load_before = os.getloadavg()[0]
    rows = measure(networks, y, args.batches, config, args.repeats)

    header = f"{'network':<7} {'path':<19} {'batch':>5} {'NFE':>4} {'img/s':>8} {'ms/img':>9} {'× ref loop':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.network:<7} {r.path:<19} {r.batch:>5} {r.nfe:>4} {r.images_per_s:>8.3f} {r.ms_per_image:>9.1f} "
            f"{r.speedup_vs_reference_loop:>10.2f}"
        )
    meta = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "model": args.model,
        "threads": torch.get_num_threads(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "images": args.images,
        "operator": "Blur 61x61 Gaussian, sigma 0.05, deblur preset, held-out tiles",
    }
    write_results(args.out, {"meta": meta, "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
