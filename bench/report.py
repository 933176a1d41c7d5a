"""Report build time against job size, and the classical baseline's cost per image for every task kind.

1. Synthetic per-image rows (PSNR/SSIM, the baseline's and the gains), completion timings of shards of
   16 and 8 samples + 4 best + 4 worst of 64x64 images go through exactly what the report task runs
   after reading them: ``pick_images``, ``write_report`` (summary, metrics.csv, report.md, report.html,
   report-card.html, written to a temporary folder) and the UI strip. Times per stage and file sizes.
2. Each registered task kind's ``baseline`` on its evaluate-mode measurements of smooth random images at
   64² and 256² (one thread, the first call excluded), in ms per image, with ``baseline_fraction``.

Prints two tables and writes ``bench/results/report.json``.
Usage: ``python bench/report.py [--images 2000 10000 100000] [--sizes 64 256]``. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffpir_core.reporting import (
    Extremes,
    ReportFacts,
    ReportSample,
    ShardTiming,
    markdown_strip,
    pick_images,
    write_report,
)
from diffpir_core.runs.batches import inputs_from_arrays, synthesise
from diffpir_core.task_kinds import TASK_KINDS

SHARD_SIZE = 16
SAMPLES = 8
EXTREMES = 4


def _smooth(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (count, 6, 6, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC)) for c in coarse])


def _rows(rng: np.random.Generator, images: int) -> list[dict[str, Any]]:
    psnr = rng.normal(24.0, 2.0, images)
    base = psnr - rng.normal(0.9, 0.6, images)
    ssim = np.clip(rng.normal(0.66, 0.08, images), 0, 1)
    base_ssim = np.clip(ssim - rng.normal(0.08, 0.04, images), 0, 1)
    return [
        {
            "id": f"img{i:06d}.png",
            "shard": f"64x64/{i // SHARD_SIZE:06d}",
            "task": "sr4",
            "psnr": float(psnr[i]),
            "ssim": float(ssim[i]),
            "baseline_psnr": float(base[i]),
            "gain_psnr": float(psnr[i] - base[i]),
            "baseline_ssim": float(base_ssim[i]),
            "gain_ssim": float(ssim[i] - base_ssim[i]),
            "seconds": 0.8,
        }
        for i in range(images)
    ]


def _timeline(rng: np.random.Generator, shards: int) -> list[ShardTiming]:
    ends = 1.7e9 + np.cumsum(rng.uniform(0.5, 1.5, shards))
    return [
        ShardTiming(f"64x64/{i:06d}", float(end), {"prepare": 0.05, "load_prior": 0.0, "sample": 12.0, "write": 0.04})
        for i, end in enumerate(ends)
    ]


def _sample(rng: np.random.Generator, row: dict[str, Any]) -> ReportSample:
    truth = _smooth(rng, 1, 64)[0]
    noisy = np.clip(truth.astype(int) + rng.integers(-20, 20, truth.shape), 0, 255).astype(np.uint8)
    return ReportSample(
        row["id"], truth[::4, ::4], noisy, truth, np.clip(noisy // 2 + truth // 2, 0, 255).astype(np.uint8), row
    )


def report_build(images: int) -> dict[str, Any]:
    """Seconds per stage of one report of ``images`` synthetic rows, and the sizes of the files."""
    rng = np.random.default_rng(images)
    rows = _rows(rng, images)
    timeline = _timeline(rng, -(-images // SHARD_SIZE))
    info = ReportFacts(
        task="sr x4, σ=0.05", dataset="bench", prior="demo", nfes=100, wall_seconds=3600.0, baseline="bicubic"
    )
    times: dict[str, float] = {}
    started = time.perf_counter()
    picks = pick_images(rows, SAMPLES, EXTREMES)
    times["pick"] = time.perf_counter() - started
    by_id = {row["id"]: row for row in rows}
    shown = {image_id: _sample(rng, by_id[image_id]) for image_id in picks.ids()}
    samples = [shown[i] for i in picks.samples]
    extremes = Extremes(picks.metric, [shown[i] for i in picks.best], [shown[i] for i in picks.worst])
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        files = write_report(folder, rows, info, samples, extremes=extremes, timeline=timeline)
        times["write_report"] = time.perf_counter() - started
        sizes = {name: Path(folder, name).stat().st_size for name in files.uris}
    started = time.perf_counter()
    strip = markdown_strip(samples, "bicubic")
    times["ui_strip"] = time.perf_counter() - started
    return {
        "images": images,
        "shards": len(timeline),
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "total_s": round(sum(times.values()), 3),
        "bytes": sizes,
        "ui_strip_bytes": len(strip.encode()),
    }


def baseline_costs(sizes: list[int], images: int = 4) -> list[dict[str, Any]]:
    """ms per image of every task kind's baseline at each size (default fields; one warm-up call)."""
    rng = np.random.default_rng(0)
    results = []
    for size in sizes:
        truth = _smooth(rng, images, size)
        ids = [f"img{i}" for i in range(images)]
        for name, kind in TASK_KINDS.items():
            task = kind()
            inputs = inputs_from_arrays(task, ids, synthesise(task, ids, truth, 0, {}))
            task.baseline(inputs.y[:1], inputs.select([0]).params)
            started = time.perf_counter()
            task.baseline(inputs.y, inputs.params)
            ms = 1000 * (time.perf_counter() - started) / images
            results.append(
                {
                    "kind": name,
                    "label": task.label(),
                    "baseline": task.BASELINE,
                    "size": size,
                    "ms_per_image": round(ms, 1),
                    "fraction": round(task.baseline_fraction(size, size, inputs.params), 4),
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 10000, 100000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "report.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    builds = [report_build(n) for n in args.images]
    print(
        f"report build, synthetic rows, shards of {SHARD_SIZE}, {SAMPLES} samples + {EXTREMES}+{EXTREMES} extremes "
        "of 64x64"
    )
    print(
        "images | shards | pick s | write_report s | UI strip s | total s | report.html kB | card kB | metrics.csv kB"
    )
    for b in builds:
        s = b["seconds"]
        print(
            f"{b['images']} | {b['shards']} | {s['pick']} | {s['write_report']} | {s['ui_strip']} | {b['total_s']} | "
            f"{b['bytes']['report.html'] // 1024} | {b['bytes']['report-card.html'] // 1024} | "
            f"{b['bytes']['metrics.csv'] // 1024}"
        )
    costs = baseline_costs(args.sizes)
    print("\nbaseline cost per image (one thread)")
    print("task | baseline | size | ms/image | share of images scored")
    for c in costs:
        print(f"{c['label']} | {c['baseline']} | {c['size']}² | {c['ms_per_image']} | {c['fraction']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "report_build": builds,
                "baseline_cost": costs,
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_avg_1m": os.getloadavg()[0],
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                },
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
