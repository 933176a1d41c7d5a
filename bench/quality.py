"""Quality of the demo prior: DiffPIR vs the classical baseline per task on the held-out tiles.

Prints a table (mean PSNR/SSIM per task, gain in dB) and writes bench/results/quality.json with the
per-image numbers. Usage: ``python bench/quality.py [--prior demo] [--images 16] [--iter-num N]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from results import write_results

from diffpir_core.models import load_prior
from diffpir_core.training import held_out_tiles
from diffpir_core.training.quality import QUALITY_TASKS, evaluate_task

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="demo", help="preset name or checkpoint path (default: demo)")
    parser.add_argument("--images", type=int, default=16, help="number of held-out 64x64 tiles (max 16)")
    parser.add_argument("--tasks", nargs="+", default=list(QUALITY_TASKS), choices=list(QUALITY_TASKS))
    parser.add_argument("--iter-num", type=int, default=None, help="override the sampler's steps for every task")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    prior = load_prior(args.prior)
    tiles = dict(list(held_out_tiles().items())[: args.images])
    overrides = {"iter_num": args.iter_num} if args.iter_num else None
    results = []
    print(
        f"prior {prior.name} (sha256 {prior.sha256[:12]}), {len(tiles)} held-out tiles 64x64, CPU threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"{'task':<8} {'baseline':<11} {'NFE':>4} {'PSNR DiffPIR':>12} {'PSNR base':>10} {'gain dB':>8} "
        f"{'SSIM DiffPIR':>12} {'SSIM base':>10} {'time s':>7}"
    )
    for task in args.tasks:
        summary = evaluate_task(prior.unet, task, tiles, prior=args.prior, sampler=overrides).summary()
        m = summary["mean"]
        print(
            f"{task:<8} {summary['baseline']:<11} {summary['sampler']['iter_num']:>4} {m['diffpir_psnr']:>12.2f} "
            f"{m['baseline_psnr']:>10.2f} {summary['psnr_gain_db']:>+8.2f} {m['diffpir_ssim']:>12.4f} "
            f"{m['baseline_ssim']:>10.4f} {summary['seconds']:>7.1f}",
            flush=True,
        )
        results.append(summary)
    write_results(args.out, {"prior": prior.name, "sha256": prior.sha256, "images": list(tiles), "tasks": results})


if __name__ == "__main__":
    main()
