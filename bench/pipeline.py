"""Orchestration overhead: a whole restore job against the pure sampler time for the same images.

A job of 64 small images (32×32, SR ×2, a tiny random 0.35 M-parameter prior, few NFEs) runs end to
end through the ``restore`` flow (ingest, plan, one task per shard, metrics, report, artifacts) with
the local runner, with a Dask LocalCluster created for the run (cold workers), and with an existing
LocalCluster whose worker already ran one job (warm, as a long-lived cluster is). The same measurements are also
restored by calling the sampler directly (``restore_batchwise`` shard by shard, no Prefect, no I/O).
Overhead = job wall time − sampler time, in % of the job and in ms per shard; "sampling in tasks" is
the sampler time measured inside the shard tasks (it shows when the executing process itself is
slower); a re-run of the finished job (every shard skipped by its record) shows the fixed cost of a
run that has nothing to do.

One PyTorch thread everywhere (Dask workers get OMP_NUM_THREADS=1 from Dask), Prefect's temporary
server (started before timing). Prints a table and writes ``bench/results/pipeline.json``.
Usage: ``python bench/pipeline.py [--images 64] [--shard-size 8] [--iter-num 10]``. ~1-2 min on 2 cores.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import logging

import numpy as np
import torch
from distributed import LocalCluster
from PIL import Image
from prefect import flow

from diffpir_core.io import DatasetStore
from diffpir_core.models import build_unet, load_prior, save_prior
from diffpir_core.runs.batches import inputs_from_arrays, restore_batchwise, synthesise
from diffpir_core.runs.job import Job, parse_job
from diffpir_core.runs.plan import read_plans
from diffpir_flow.flows.run import run as run_flow

TINY_UNET = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,1",
    "attention_resolutions": "",
    "learn_sigma": True,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}


@flow(name="bench-warm-up")
def _warm_up() -> None:
    """Starts Prefect's temporary server outside the timed runs."""


def _images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((32, 32), Image.Resampling.BICUBIC).save(folder / f"img{i:04d}.png")


def _sampler_seconds(job: Job, input_store: str) -> float:
    """Pure sampler time: every shard's measurements restored by ``restore_batchwise`` (prior preloaded)."""
    source = DatasetStore.open(input_store)
    prior = load_prior(job.prior)
    config = job.sampler_config()
    shards = [
        (
            ref,
            inputs_from_arrays(
                job.task, list(ref.ids), synthesise(job.task, list(ref.ids), source.read_images(ref), job.seed, {})
            ),
        )
        for ref in source.shards()
    ]
    started = time.perf_counter()
    for _, inputs in shards:
        restore_batchwise(prior.unet, inputs, job.task, config, seed=job.seed, batch_size=job.batch_size, device="cpu")
    return time.perf_counter() - started


def _timed(job: Job) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    state = run_flow(job=job, return_state=True)
    wall = time.perf_counter() - started
    if not state.is_completed():
        raise SystemExit(f"benchmark job failed: {state.message}")
    return wall, state.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--iter-num", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pipeline.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    _warm_up()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    _images(work / "images", args.images)
    torch.manual_seed(0)
    prior = save_prior(build_unet(**TINY_UNET), work / "tiny.safetensors", TINY_UNET)
    shards = -(-args.images // args.shard_size)

    def job(name: str, runner: dict[str, Any]) -> Job:
        return parse_job(
            {
                "input": str(work / "images"),
                "output": str(work / name),
                "task": {"kind": "sr", "scale": 2},
                "prior": str(prior),
                "sampler": {"iter_num": args.iter_num},
                "shard_size": args.shard_size,
                "batch_size": args.shard_size,
                "device": "cpu",
                "runner": runner,
            }
        )

    configs = {
        "local (1 thread)": {"kind": "local", "max_workers": 1},
        "dask LocalCluster (1 worker, created per run)": {
            "kind": "dask",
            "cluster_class": "distributed.LocalCluster",
            "cluster_kwargs": {
                "n_workers": 1,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            },
        },
    }
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    existing = {"kind": "dask", "address": cluster.scheduler_address}
    _timed(
        job("warm-up", existing)
    )  # the worker imports torch, Prefect and the project once, as a long-lived cluster has
    configs["dask existing LocalCluster (1 worker, warm)"] = existing
    rows = []
    for index, (label, runner) in enumerate(configs.items()):
        spec = job(f"out{index}", runner)
        wall, summary = _timed(spec)
        rerun, again = _timed(spec)
        sampler = _sampler_seconds(spec, read_plans(str(work / f"out{index}"), {})[0].input_store)
        overhead = wall - sampler
        rows.append(
            {
                "runner": label,
                "images": args.images,
                "shards": shards,
                "restored": summary["restored"],
                "wall_s": round(wall, 2),
                "sampler_s": round(sampler, 2),
                "overhead_s": round(overhead, 2),
                "overhead_pct": round(100 * overhead / wall, 1),
                "ms_per_shard": round(1000 * overhead / shards, 1),
                "phases_s": summary["seconds"],
                "rerun_wall_s": round(rerun, 2),
                "rerun_skipped": again["skipped"],
                "rerun_ms_per_shard": round(1000 * rerun / shards, 1),
            }
        )
    cluster.close()
    header = (
        "runner",
        "wall s",
        "sampler s",
        "overhead s",
        "overhead %",
        "ms/shard",
        "shard phase s",
        "sampling in tasks s",
        "re-run s (all skipped)",
    )
    print(
        f"{args.images} images 32x32, SR x2, {args.iter_num} NFEs, {shards} shards of {args.shard_size}, tiny prior, "
        "CPU"
    )
    print(" | ".join(header))
    for r in rows:
        print(
            f"{r['runner']} | {r['wall_s']} | {r['sampler_s']} | {r['overhead_s']} | {r['overhead_pct']} | "
            f"{r['ms_per_shard']} | {r['phases_s']['restore']} | {r['phases_s']['sampling']} | {r['rerun_wall_s']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "config": {
            "images": args.images,
            "size": 32,
            "task": "sr x2",
            "iter_num": args.iter_num,
            "shard_size": args.shard_size,
            "prior": "tiny random UNet (0.35 M params)",
            "torch_threads": 1,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
