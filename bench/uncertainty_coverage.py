"""Calibrated uncertainty of the demo prior on held-out photo tiles: coverage, band width, std–error correlation.

For SR ×4 (σ = 0.05) and box inpainting, each 64×64 tile of the held-out photos (``skimage.data`` astronaut, coffee
and chelsea, which the demo prior never saw, reduced to a short side of ``--short-side`` and cut into tiles) is
degraded as an evaluate-mode job degrades it (seeded by its id) and restored K times with DiffPIR, one generator per
sample (seeded as a job with ``uncertainty`` seeds them: ``runs.batches.sample_seed``). The estimate is the mean of
the K samples (clamped to [0, 1]), the std their per-pixel standard deviation. An id-hashed 25 % split fits q̂
(α = δ = 0.1); the other tiles measure image coverage (target ≥ 90 %), mean pixel coverage, mean band width and the
std–|error| correlation. The average over ``--splits`` random splits of the same scores is printed too: with distinct
scores its expectation is ⌈(n + 1)(1 − δ)⌉/(n + 1) for any set of images (a check of the procedure, not of the
data). Seconds per image are timed for K = 1 and K = 8 (batches of 8 samples, one thread).
Usage: ``python -m bench.uncertainty_coverage [--iter-num 20] [--samples 8] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter

from bench.results import write_results
from diffpir_core.models import load_prior
from diffpir_core.runs.batches import image_seed, inputs_from_arrays, sample_seed, synthesise
from diffpir_core.sampling import resolve_job_sampler, restore_with
from diffpir_core.task_kinds import TaskSpec
from diffpir_core.training import held_out_tiles
from diffpir_core.uncertainty import (
    calibration_split,
    coverage_summary,
    fit_scale,
    image_score,
    split_average,
)

RESULTS = Path(__file__).resolve().parent / "results" / "uncertainty_coverage.json"
TASKS: dict[str, dict[str, Any]] = {
    "sr": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
    "inpaint-box": {"kind": "inpaint", "mask": "box", "noise_sigma": 0.0},
}
ALPHA = DELTA = 0.1


def restore_samples(unet: torch.nn.Module, task, config, image_id: str, arrays, samples: int, seed: int):
    """K samples of one image in one batch, clamped to [0, 1]: (K, H, W, 3) float64."""
    inputs = inputs_from_arrays(
        task, [image_id] * samples, {k: np.repeat(v, samples, axis=0) for k, v in arrays.items()}
    )
    generators = [torch.Generator().manual_seed(sample_seed(seed, image_id, k)) for k in range(samples)]
    out = restore_with("diffpir", unet, task.operator(inputs.params), inputs.y, config, generator=generators)
    return out.clamp(0, 1).double().numpy().transpose(0, 2, 3, 1)


def run_task(unet, name: str, tiles: dict[str, np.ndarray], args) -> dict[str, Any]:
    task = TypeAdapter(TaskSpec).validate_python(TASKS[name])
    config = resolve_job_sampler(task, "diffpir", args.prior, {"iter_num": args.iter_num}).config
    errors, stds, cal_ids = {}, {}, []
    start = time.perf_counter()
    for image_id, tile in tiles.items():
        arrays = synthesise(task, [image_id], tile[None], args.seed, {})
        draws = restore_samples(unet, task, config, image_id, arrays, args.samples, args.seed)
        errors[image_id] = np.abs(draws.mean(axis=0) - tile / 255.0)
        stds[image_id] = draws.std(axis=0, ddof=1)
        if calibration_split(image_id, 0.25):
            cal_ids.append(image_id)
    seconds_k = (time.perf_counter() - start) / len(tiles)
    test_ids = [i for i in tiles if i not in cal_ids]
    scores = {i: image_score(errors[i], stds[i], ALPHA) for i in tiles}
    scale = fit_scale([scores[i] for i in cal_ids], DELTA)
    summary = coverage_summary(
        [errors[i] for i in test_ids], [stds[i] for i in test_ids], scale, ALPHA, DELTA, n_calibration=len(cal_ids)
    )
    average = split_average(list(scores.values()), 0.25, DELTA, splits=args.splits)
    single = list(tiles.items())[: args.samples]  # K = 1: the same batch size, 8 images one sample each
    start = time.perf_counter()
    ids = [i for i, _ in single]
    arrays = synthesise(task, ids, np.stack([t for _, t in single]), args.seed, {})
    inputs = inputs_from_arrays(task, ids, arrays)
    generators = [torch.Generator().manual_seed(image_seed(args.seed, i)) for i in ids]
    restore_with("diffpir", unet, task.operator(inputs.params), inputs.y, config, generator=generators)
    seconds_1 = (time.perf_counter() - start) / len(ids)
    return {
        "task": name,
        "sampler": config.model_dump(include={"lambda_", "zeta", "iter_num"}),
        "n_calibration": len(cal_ids),
        "n_test": len(test_ids),
        "scale": scale,
        "summary": {k: v for k, v in summary.items() if k != "pixel_coverage"},
        "split_average": average,
        "seconds_per_image": {"K=1": seconds_1, f"K={args.samples}": seconds_k},
        "scores": scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="demo")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--iter-num", type=int, default=20)
    parser.add_argument("--short-side", type=int, default=256, help="held-out photos reduced to this short side")
    parser.add_argument("--splits", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    tiles = {f"{key}@{args.short_side}": tile for key, tile in held_out_tiles(64, short_side=args.short_side).items()}
    print(f"prior {prior.name}, {len(tiles)} held-out tiles, K = {args.samples}, {args.iter_num} steps, 1 thread")
    rows = []
    header = f"{'task':12} {'n cal':>5} {'q̂':>6} {'img cov':>7} {'avg 1000':>8} {'pix cov':>7} {'width':>6} {'r':>5}"
    print(header + f" {'s/img K=1':>9} {'s/img K':>8}")
    for name in args.tasks:
        row = run_task(prior.unet, name, tiles, args)
        s = row["summary"]
        print(
            f"{name:12} {row['n_calibration']:5d} {row['scale']:6.2f} {s['image_coverage']:7.3f} "
            f"{row['split_average']['mean_image_coverage']:8.3f} {s['mean_pixel_coverage']:7.3f} "
            f"{s['mean_width']:6.3f} {s['std_error_correlation']['pearson']:5.2f} "
            f"{row['seconds_per_image']['K=1']:9.2f} {row['seconds_per_image'][f'K={args.samples}']:8.2f}",
            flush=True,
        )
        rows.append(row)
    write_results(args.out, {"prior": prior.name, "tiles": len(tiles), "samples": args.samples, "rows": rows})


if __name__ == "__main__":
    main()
