"""Threads: UNet forward time in the main process vs inside Dask workers, and ``diffpir run`` with the default
``threads`` vs explicit 1 and 2, on the machine as it is ("idle") and with two busy processes started here ("loaded").

Forward (bundled demo prior, 64², batch ``--batch``): each round times the main process, a plain
``distributed.LocalCluster`` worker (the nanny's environment: ``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_=65536``)
and a worker of the project's Dask runner (``diffpir_flow.flows.runners.build_task_runner``, thread plugin registered),
all at
the same thread count; plus the plain worker at torch's own count there. Rounds are interleaved; medians reported.
``diffpir run``: a small evaluate job (8 images 64², 2 shards, ``--nfe`` steps, local runner) in a subprocess; the
sampler seconds are the sum of the shard records' ``sample`` timings, wall is the whole command (server start
included),
and "used" the threads the shard records say they ran with (for the default: what the job's first plan chose).
Prints a table, writes ``bench/results/threads.json``. About 10-15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from results import write_results

CLUSTER = {"n_workers": 1, "threads_per_worker": 1, "processes": True, "dashboard_address": None, "host": "127.0.0.1"}


def forward_seconds(threads: int | None, batch: int, reps: int) -> tuple[float, int]:
    """Median seconds of one demo-prior forward at ``threads`` (None: leave torch's count) in the calling thread."""
    from diffpir_core.models import load_prior
    from diffpir_core.runs.threads import apply_threads

    if threads is not None:
        apply_threads(threads)
    unet = load_prior("demo").unet.eval()
    x, t = torch.randn(batch, 3, 64, 64), torch.full((batch,), 500)
    times = []
    with torch.inference_mode():
        unet(x, t)
        for _ in range(reps):
            start = time.perf_counter()
            unet(x, t)
            times.append(time.perf_counter() - start)
    return statistics.median(times), torch.get_num_threads()


def forward_table(threads: int, batch: int, reps: int, rounds: int) -> dict[str, Any]:
    """Forward medians over interleaved rounds: main, plain Dask worker, project Dask worker (and plain at its
    default)."""
    from distributed import Client, LocalCluster

    from diffpir_core.runs.job import parse_job
    from diffpir_flow.flows.runners import build_task_runner

    job = parse_job(
        {
            "input": "unused",
            "output": "unused",
            "threads": threads,
            "runner": {"kind": "dask", "cluster_kwargs": CLUSTER},
        }
    )
    samples: dict[str, list[float]] = {
        "main": [],
        "dask worker (nanny defaults)": [],
        "dask worker (project runner)": [],
    }
    default_threads: dict[str, int] = {}
    with LocalCluster(**CLUSTER) as cluster, Client(cluster) as plain, build_task_runner(job) as runner:
        fixed = runner.client
        for _ in range(rounds):
            samples["main"].append(forward_seconds(threads, batch, reps)[0])
            samples["dask worker (nanny defaults)"].append(
                plain.submit(forward_seconds, threads, batch, reps, pure=False).result()[0]
            )
            samples["dask worker (project runner)"].append(
                fixed.submit(forward_seconds, threads, batch, reps, pure=False).result()[0]
            )
        seconds, default_threads["dask worker, torch's own count"] = plain.submit(
            forward_seconds, None, batch, reps, pure=False
        ).result()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    medians["dask worker, torch's own count"] = seconds
    return {
        "threads": threads,
        "batch": batch,
        "seconds": medians,
        "vs_main": {k: v / medians["main"] for k, v in medians.items()},
        "default_threads": default_threads,
        "rounds": rounds,
    }


def _spin(stop: float) -> None:
    x = 0
    while time.time() < stop:
        x += 1


def write_inputs(folder: Path, count: int = 8) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        smooth = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        Image.fromarray(smooth).save(folder / f"im{i}.png")


def run_job(work: Path, threads: int | None, nfe: int) -> dict[str, Any]:
    """One ``diffpir run`` in a subprocess (its own temporary server, OMP_NUM_THREADS unset); wall and sampler
    seconds."""
    from diffpir_core.io import DatasetStore

    out = Path(tempfile.mkdtemp(dir=work))
    job = {
        "input": str(work / "in"),
        "output": str(out / "out"),
        "task": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
        "prior": "demo",
        "shard_size": 4,
        "batch_size": 4,
        "device": "cpu",
        "sampler": {"iter_num": nfe},
        "threads": threads,
    }
    (out / "job.yaml").write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "OMP_NUM_THREADS")}
    env |= {
        "PREFECT_HOME": str(out / "prefect"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }
    start = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("diffpir")), "run", str(out / "job.yaml")],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        return {
            "threads": threads,
            "wall_s": wall,
            "sample_s": None,
            "error": done.stderr[-2000:],
            "traceback": "Traceback" in done.stderr,
        }
    store_uri = (
        next(line for line in done.stdout.splitlines() if line.startswith("completed:"))
        .split("results: ")[1]
        .split(" ")[0]
    )
    store = DatasetStore.open(store_uri)
    records = [store.read_record(ref, "restored") for ref in store.shards()]
    sample = sum(record.timings["sample"] for record in records)
    used = sorted({record.metrics.get("threads") for record in records}, key=str)  # what the default chose
    return {
        "threads": threads,
        "threads_used": used,
        "wall_s": wall,
        "sample_s": sample,
        "traceback": "Traceback" in done.stdout + done.stderr,
    }


def run_table(nfe: int, settings: list[int | None], rounds: int = 1) -> dict[str, Any]:
    """``diffpir run`` per thread setting, idle then with two busy processes; ``rounds`` interleaved rounds, each
    setting's median sampler seconds in ``median_sample_s``."""
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    write_inputs(work / "in")
    table: dict[str, Any] = {}
    for load in ("idle", "loaded"):
        burners = []
        if load == "loaded":
            stop = time.time() + 3600
            burners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(2)]
            for proc in burners:
                proc.start()
        try:
            runs = [run_job(work, threads, nfe) for _ in range(rounds) for threads in settings]
            table[load] = {
                "loadavg_before": os.getloadavg()[0],
                "runs": runs,
                "median_sample_s": _medians(runs, settings),
            }
            table[load]["loadavg_after"] = os.getloadavg()[0]
        finally:
            for proc in burners:
                proc.terminate()
    return table


def _medians(runs: list[dict[str, Any]], settings: list[int | None]) -> dict[str, float | None]:
    """Median sampler seconds per thread setting ("default" for None), over the runs that succeeded."""
    medians: dict[str, float | None] = {}
    for threads in settings:
        seconds = [run["sample_s"] for run in runs if run["threads"] == threads and run["sample_s"] is not None]
        medians["default" if threads is None else str(threads)] = statistics.median(seconds) if seconds else None
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1], help="thread counts for the forward comparison")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--skip-run", action="store_true", help="only the forward comparison")
    parser.add_argument("--run-rounds", type=int, default=1, help="interleaved rounds of the diffpir run settings")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "threads.json")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    forward = [forward_table(t, args.batch, args.reps, args.rounds) for t in args.threads]
    print(
        f"\nUNet forward, demo prior 64², batch {args.batch} (median of {args.rounds} interleaved rounds x "
        f"{args.reps} calls)"
    )
    print(f"{'threads':>7}  {'where':<32} {'seconds':>8} {'vs main':>8}")
    for row in forward:
        for name, seconds in row["seconds"].items():
            print(f"{row['threads']:>7}  {name:<32} {seconds:8.3f} {row['vs_main'][name]:7.2f}x")
        print(f"{'':>7}  (torch's own count in a plain worker: {row['default_threads']})")
    payload = {"cores": os.cpu_count(), "forward": forward, "diffpir_run": {}, "nfe": args.nfe}
    write_results(args.out, payload)  # the forward table is kept should a run below fail
    runs = {} if args.skip_run else run_table(args.nfe, [None, 1, 2], args.run_rounds)
    if runs:
        print(f"\ndiffpir run: 8 images 64², 2 shards of 4, {args.nfe} NFE, local runner")
        print(
            f"{'load':<7} {'threads':>8} {'used':>5} {'sampler s':>10} {'wall s':>8}  traceback   loadavg before/after"
        )
        for load, entry in runs.items():
            for run in entry["runs"]:
                label = "default" if run["threads"] is None else str(run["threads"])
                sample = "failed" if run["sample_s"] is None else f"{run['sample_s']:.2f}"
                used = ",".join(str(n) for n in run.get("threads_used", [])) or "-"
                print(
                    f"{load:<7} {label:>8} {used:>5} {sample:>10} {run['wall_s']:8.1f}  {run['traceback']!s:<10}  "
                    f"{entry['loadavg_before']:.1f}/{entry['loadavg_after']:.1f}"
                )
            print(
                f"{load:<7} median sampler s: "
                + ", ".join(f"{k} {v:.2f}" for k, v in entry["median_sample_s"].items() if v is not None)
            )
    write_results(args.out, {**payload, "diffpir_run": runs})


if __name__ == "__main__":
    main()
