"""DiffPIR sampler speed: seconds per NFE, images/s, and the share of each step that is not the UNet.

Runs ``diffpir_sample`` on a deblurring batch (61×61 Gaussian kernel per image, σ = 0.05, the
``deblur`` preset with few steps) with the tiny reference UNet (64², batch 1/4/16) and the FFHQ 256
config (random weights, batch 1 by default). The UNet is timed from inside (a wrapper around its
forward), so "not UNet" = data step, schedule arithmetic, noise draws, copies and the x0 adapter.
Default on CPU: about 2 minutes on 2 free cores. Prints a table, writes ``bench/results/sampler.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from diffpir_core.models import PRESETS, build_unet
from diffpir_core.operators import Blur, gaussian_kernel
from diffpir_core.sampling import diffpir_sample
from diffpir_core.task_kinds import task_preset

TINY_CONFIG = {  # the reference test-vector UNet (testvectors/diffpir_reference/summary.json)
    "image_size": 64, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "",
    "attention_resolutions": "16,8", "num_heads": 4, "num_head_channels": 32, "num_heads_upsample": -1,
    "learn_sigma": True, "use_scale_shift_norm": True, "resblock_updown": True, "dropout": 0.1,
}


class TimedUNet(nn.Module):
    """Accumulates the wall time of the wrapped UNet's forward (synchronising CUDA)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.downsample_factor = getattr(unet, "downsample_factor", None)
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _sync(x.device)
        start = time.perf_counter()
        out = self.unet(x, t)
        _sync(x.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@dataclass
class Row:
    model: str
    size: int
    batch: int
    nfe: int
    seconds: float
    s_per_nfe: float
    images_per_s: float
    not_unet_share: float
    reference_noise: bool


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str, device: torch.device) -> nn.Module:
    config = TINY_CONFIG if name == "tiny" else PRESETS["ffhq_256"].config
    torch.manual_seed(0)
    unet = build_unet(**config)
    if name == "tiny":  # the reference's weights: zero-initialised layers refilled from a generator seeded 1
        refill = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in unet.parameters():
                if not p.any():
                    p.normal_(0, 0.05, generator=refill)
    return unet.eval().to(device)


def run(
    name: str, unet: nn.Module, size: int, batch: int, steps: int, reference_noise: bool, device: torch.device
) -> Row:
    """One timed ``diffpir_sample`` call on a deblurring batch of ``batch`` random size×size images."""
    clean = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    op = Blur(gaussian_kernel(61, 3.0))
    y = (op.A(clean) + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).to(device)
    config = task_preset("deblur", iter_num=steps, reference_noise=reference_noise)
    timed = TimedUNet(unet)
    generators = [torch.Generator().manual_seed(i) for i in range(batch)]
    _sync(device)
    start = time.perf_counter()
    diffpir_sample(timed, op, y, config, generator=generators)
    _sync(device)
    seconds = time.perf_counter() - start
    nfe = timed.calls
    not_unet = 1 - timed.seconds / seconds
    return Row(name, size, batch, nfe, seconds, seconds / nfe, batch / seconds, not_unet, reference_noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--tiny-batches", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--ffhq-batches", type=int, nargs="*", default=[1])
    parser.add_argument("--tiny-steps", type=int, default=10)
    parser.add_argument("--ffhq-steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "sampler.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows: list[Row] = []
    plans = [("tiny", 64, args.tiny_batches, args.tiny_steps), ("ffhq_256", 256, args.ffhq_batches, args.ffhq_steps)]
    for name, size, batches, steps in plans:
        if not batches:
            continue
        unet = _model(name, device)
        run(name, unet, size, 1, 2, True, device)  # warm-up: FFT plans, allocator
        for batch in batches:
            rows.append(run(name, unet, size, batch, steps, True, device))
        rows.append(run(name, unet, size, batches[0], steps, False, device))  # vectorised-noise option

    header = f"{'model':<9} {'size':>4} {'batch':>5} {'NFE':>4} {'s/NFE':>8} {'img/s':>8} {'not UNet':>8}  noise"
    print(header)
    print("-" * len(header))
    for r in rows:
        noise = "reference" if r.reference_noise else "vectorised"
        print(
            f"{r.model:<9} {r.size:>4} {r.batch:>5} {r.nfe:>4} {r.s_per_nfe:>8.4f} {r.images_per_s:>8.3f} "
            f"{100 * r.not_unet_share:>7.1f}%  {noise}"
        )
    meta = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_1min": os.getloadavg()[0],
        "operator": "Blur 61x61 Gaussian, sigma 0.05, deblur preset",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
