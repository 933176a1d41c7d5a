"""Time per image of K posterior samples against one restoration (K = 1), as a job with ``uncertainty`` runs them.

Held-out 64² tiles (never seen by the demo prior), SR ×4 with σ = 0.05, the prior card's settings (``--iter-num``
overrides the steps). Each image's K samples run in one batch (``ShardInputs.replicated``, batch = K rows), as the
run layer does; K = 1 restores the images one at a time. Prints seconds per image and per sample, and the mean
per-pixel std of the K samples. Usage: ``python bench/uncertainty.py [--images 2] [--samples 1 8] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import TypeAdapter
from results import write_results

from diffpir_core.models import load_prior
from diffpir_core.runs.batches import inputs_from_arrays, restore_batchwise
from diffpir_core.runs.uncertainty import combine
from diffpir_core.sampling import resolve_job_sampler
from diffpir_core.task_kinds import TaskSpec
from diffpir_core.training import held_out_tiles

RESULTS = Path(__file__).resolve().parent / "results" / "uncertainty.json"
TASK = {"kind": "sr", "scale": 4, "noise_sigma": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iter-num", type=int, default=None, help="override the card's steps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tiles, prior = held_out_tiles(), load_prior("demo")
    names = sorted(tiles)[: args.images]
    task = TypeAdapter(TaskSpec).validate_python(TASK)
    config = resolve_job_sampler(task, "diffpir", "demo", {"iter_num": args.iter_num} if args.iter_num else {}).config
    truth = np.stack([tiles[n] for n in names])
    inputs = inputs_from_arrays(task, names, task.synthesise(truth, list(range(len(names))), {}))
    print(f"demo prior, {len(names)} held-out 64² tiles, SR x4 σ=0.05, {config.nfes} NFEs, {args.threads} thread(s)")
    print(f"{'K':>3} {'s/image':>8} {'s/sample':>9} {'x K=1':>6} {'mean std':>9}")
    rows = []
    for count in args.samples:
        replicated = inputs.replicated(list(range(count)))
        started = time.perf_counter()
        out, _ = restore_batchwise(prior.unet, replicated, task, config, seed=0, batch_size=count, device="cpu")
        seconds = (time.perf_counter() - started) / len(names)
        std = None
        if count > 1:
            samples = out.reshape(len(names), count, *out.shape[1:]).swapaxes(0, 1)
            std = float(combine(samples, "mean")[1].astype(np.float32).mean())
        rows.append({"samples": count, "seconds_per_image": round(seconds, 2), "mean_std": std, "nfes": config.nfes})
        ratio = seconds / rows[0]["seconds_per_image"]
        print(
            f"{count:>3} {seconds:>8.1f} {seconds / count:>9.2f} {ratio:>6.2f} "
            f"{'' if std is None else f'{std:.4f}':>9}",
            flush=True,
        )
    write_results(args.out, {"images": names, "task": TASK, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
