"""Tiled vs whole-image restoration of images several times the prior's size, against the classical baseline.

The demo prior was trained at 64²; the held-out photos (never seen by it) are reduced to a 256 px short
side and centre-cropped to 256² (4× the prior's side) or 512² (8×). For each task (SR ×4 and Gaussian
deblurring, σ = 0.05, the prior card's settings) every image is restored three ways on the same
measurement: whole-image (the UNet sees the full image), tiled (64² tiles, overlap 16, blended) and
the task's baseline. Seam visibility: mean absolute error of the tiled result in 4-px bands around the
tile borders divided by the error elsewhere (1.0 = no seam). Usage:
``python bench/tiling.py [--side 256] [--images 3] [--iter-num 100] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import TypeAdapter
from results import write_results

from diffpir_core.metrics import float_to_uint8, psnr, ssim
from diffpir_core.models import load_prior
from diffpir_core.models.tiling import tile_starts
from diffpir_core.runs.batches import Fit, inputs_from_arrays, restore_batchwise
from diffpir_core.sampling import resolve_job_sampler
from diffpir_core.task_kinds import TaskSpec
from diffpir_core.training import HELD_OUT_IMAGES, load_rgb_u8

RESULTS = Path(__file__).resolve().parent / "results" / "tiling.json"
TASKS = {
    "sr4": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
    "deblur": {"kind": "deblur", "kernel": "gaussian", "kernel_size": 25, "kernel_std": 3.2, "noise_sigma": 0.05},
}
TILE, OVERLAP = 64, 16


def _photo(name: str, side: int) -> np.ndarray:
    image = Image.fromarray(load_rgb_u8(name))
    scale = side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)))


def _seam_ratio(restored: np.ndarray, truth: np.ndarray, side: int) -> float:
    error = np.abs(restored.astype(np.float64) - truth).mean(axis=-1)
    band = np.zeros(side, dtype=bool)
    for start in tile_starts(side, TILE, OVERLAP)[1:]:
        band[max(0, start - 2) : start + 2] = True  # where a tile begins (the overlap's outer edge) ...
    for start in tile_starts(side, TILE, OVERLAP)[:-1]:
        band[max(0, start + TILE - 2) : start + TILE + 2] = True  # ... and where one ends
    near = band[:, None] | band[None, :]
    return float(error[near].mean() / error[~near].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--images", type=int, default=len(HELD_OUT_IMAGES))
    parser.add_argument("--iter-num", type=int, default=None, help="override the card's steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior("demo")
    names = HELD_OUT_IMAGES[: args.images]
    truth = np.stack([_photo(n, args.side) for n in names])
    rows = []
    print(
        f"demo prior ({prior.config['image_size']}² training size), {len(names)} held-out photos {args.side}², "
        f"{torch.get_num_threads()} CPU thread(s)"
    )
    print(f"{'task':<7} {'method':<9} {'PSNR':>6} {'SSIM':>6} {'seam':>5} {'s/image':>8}")
    for label, spec in TASKS.items():
        task = TypeAdapter(TaskSpec).validate_python(spec)
        overrides = {"iter_num": args.iter_num} if args.iter_num else {}
        config = resolve_job_sampler(task, "diffpir", "demo", overrides).config
        inputs = inputs_from_arrays(task, list(names), task.synthesise(truth, list(range(len(names))), {}))
        results = {"baseline": (float_to_uint8(task.baseline(inputs.y, inputs.params)), 0.0)}
        for method, fit in (("whole", Fit(tile=0)), ("tiled", Fit(tile=TILE, overlap=OVERLAP, tile_batch=16))):
            started = time.perf_counter()
            out, _ = restore_batchwise(prior.unet, inputs, task, config, seed=0, batch_size=1, device="cpu", fit=fit)
            results[method] = (out, (time.perf_counter() - started) / len(names))
        for method, (out, seconds) in results.items():
            row = {
                "task": label,
                "method": method,
                "psnr": float(np.mean(psnr(out, truth))),
                "ssim": float(np.mean(ssim(out, truth))),
                "seconds_per_image": round(seconds, 1),
                "seam_ratio": float(np.mean([_seam_ratio(o, t, args.side) for o, t in zip(out, truth, strict=True)])),
                "nfes": config.nfes,
            }
            rows.append(row)
            print(
                f"{label:<7} {method:<9} {row['psnr']:>6.2f} {row['ssim']:>6.3f} {row['seam_ratio']:>5.2f} "
                f"{seconds:>8.1f}",
                flush=True,
            )
    write_results(args.out, {"side": args.side, "images": list(names), "tile": TILE, "overlap": OVERLAP, "rows": rows})


if __name__ == "__main__":
    main()
