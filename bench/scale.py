"""Large jobs on a simulated accelerator: how much of a job's wall time the model is busy, and what the flow costs.

The prior is the tiny random UNet of the tests, but every forward call takes a fixed time
(``--forward-s``, by sleeping for what the real call did not use), as an accelerator would: a shard of
``--shard-size`` images at ``--nfe`` network calls costs ``nfe × forward_s`` of model time, and the CPU stays free
for the orchestration, as it is beside a GPU. The hook is installed by this benchmark only (``install``): in the
bench process for the local runner, and through Dask's ``preload`` in every Dask worker (this file is the preload).

Each configuration runs in a fresh child process (so its peak RSS is its own) against a store made directly (no
image files to ingest): the job, then a re-run of the finished job (everything skipped), then ``diffpir status``.
Reported per runner (local; Dask LocalCluster created by the job; an existing Dask scheduler) and storage (local;
S3 on a SeaweedFS server on 127.0.0.1): compute share = Σ model time / (job wall × model slots), orchestration overhead
per shard, peak RSS of the flow process, Prefect task runs per shard, the re-run and the status times.

Usage: ``python bench/scale.py --shards 1000 --runners local --storage local`` (one configuration per
runner × storage × shard count; ``--help`` for the rest). ``--kill-after S`` first SIGKILLs a run of each job S seconds
in, then times the resumed run (``skipped``: the shards the killed run had finished). Prints a table and writes
``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FORWARD_ENV = "DIFFPIR_BENCH_FORWARD_S"
HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results" / "scale.json"
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


def install() -> None:
    """Make every prior this process loads take ``$DIFFPIR_BENCH_FORWARD_S`` seconds per forward call."""
    import diffpir_core.runs.priors

    seconds = float(os.environ.get(FORWARD_ENV, "0"))
    real_load = getattr(diffpir_core.runs.priors.load_prior, "__wrapped__", diffpir_core.runs.priors.load_prior)

    def load_prior(*args: Any, **kwargs: Any) -> Any:
        prior = real_load(*args, **kwargs)
        forward = prior.unet.forward

        def timed_forward(*f_args: Any, **f_kwargs: Any) -> Any:
            started = time.perf_counter()
            result = forward(*f_args, **f_kwargs)
            time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
            return result

        prior.unet.forward = timed_forward
        return prior

    load_prior.__wrapped__ = real_load  # type: ignore[attr-defined]
    diffpir_core.runs.priors.load_prior = load_prior


def dask_setup(worker: Any) -> None:
    """Dask preload entry point: the simulated accelerator in this worker too."""
    import torch

    torch.set_num_threads(1)
    install()


# ---------------------------------------------------------------------------------------------- child process
def _make_store(uri: str, options: dict[str, Any], shards: int, shard_size: int, size: int) -> None:
    """A complete dataset store of ``shards × shard_size`` random ``size``² images, written a shard at a time."""
    import numpy as np

    from diffpir_core.io import DatasetStore, ImageMeta

    store = DatasetStore.create(uri, options, shard_size=shard_size, overwrite=True)
    rng = np.random.default_rng(0)
    step = shard_size * max(1, 512 // shard_size)
    total = shards * shard_size
    for start in range(0, total, step):
        count = min(step, total - start)
        images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        metas = [
            ImageMeta(
                id=f"img{start + i:07d}.png",
                source=f"bench://img{start + i:07d}.png",
                sha256=f"{start + i:064x}",
                source_shape=(size, size),
                source_mode="RGB",
            )
            for i in range(count)
        ]
        store.append((size, size), images, metas)
    store.mark_complete()


def _task_runs(flow_run_ids: list[Any]) -> int:
    """Task runs of these flow runs and of their sub-flow runs (counted by the Prefect API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": flow_run_ids}))
        ids = flow_run_ids + [run.id for run in children]
        count, page = 0, 200
        while batch := client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": ids}), limit=page, offset=count
        ):
            count += len(batch)
        return count


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process; returns its measurements."""
    import torch

    torch.set_num_threads(1)
    install()
    from prefect import flow

    from diffpir_core.runs.job import parse_job
    from diffpir_core.runs.status import job_status
    from diffpir_flow.flows.run import run as run_flow

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        """Starts Prefect's temporary server outside the timed runs."""

    warm_up()
    work, options = spec["work"], spec["storage_options"]
    from diffpir_core.models import build_unet, save_prior

    prior = Path(spec["scratch"]) / "tiny.safetensors"
    made = time.perf_counter()
    if not spec.get("resume"):  # a resumed run restores the store and prior the killed one made
        torch.manual_seed(0)
        save_prior(build_unet(**TINY_UNET), prior, TINY_UNET)
        _make_store(f"{work}/input.zarr", options, spec["shards"], spec["shard_size"], spec["size"])
    made = time.perf_counter() - made
    job = parse_job(
        {
            "input": f"{work}/input.zarr",
            "output": f"{work}/out",
            "mode": "evaluate",
            "task": {"kind": "sr", "scale": 2, "noise_sigma": 0.0},
            "prior": str(prior),
            "sampler": {"iter_num": spec["nfe"]},
            "shard_size": spec["shard_size"],
            "batch_size": spec["shard_size"],
            "device": "cpu",
            "runner": spec["runner"],
            "metrics": ["psnr"],
            "storage_options": options,
            "report": {"samples": 0, "extremes": 0},
            "retry_delay_s": 0.5,
            **spec.get("job", {}),
        }
    )
    started = time.perf_counter()
    state = run_flow(job=job, return_state=True)
    wall = time.perf_counter() - started
    if not state.is_completed():
        raise SystemExit(f"benchmark job failed: {state.message}")
    summary = state.result()
    rss_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    again = run_flow(job=job, return_state=True)
    rerun = time.perf_counter() - started
    started = time.perf_counter()
    status = job_status(f"{work}/out", options)
    status_s = time.perf_counter() - started
    runs = _task_runs([state.state_details.flow_run_id])
    slots = spec["slots"]
    model = summary["seconds"]["sampling"]
    return {
        "wall_s": round(wall, 2),
        "phases_s": summary["seconds"],
        "model_s": round(model, 2),
        "compute_share": round(model / (wall * slots), 3),
        "restore_share": round(model / (summary["seconds"]["restore"] * slots), 3),
        "overhead_ms_per_shard": round(1000 * (wall * slots - model) / spec["shards"], 1),
        "restored": summary["restored"],
        "peak_rss_mb": round(rss_run, 1),
        "task_runs_per_shard": round(runs / spec["shards"], 2),
        "skipped": summary["skipped"],
        "rerun_s": round(rerun, 2),
        "rerun_skipped": again.result()["skipped"] if again.is_completed() else None,
        "status_s": round(status_s, 2),
        "status_done": status["counts"]["done"],
        "store_build_s": round(made, 1),
    }


# ---------------------------------------------------------------------------------------------- driver
def _runner(kind: str, workers: int, address: str | None) -> dict[str, Any]:
    if kind == "local":
        return {"kind": "local", "max_workers": workers}
    if kind == "dask-existing":
        return {"kind": "dask", "address": address}
    return {
        "kind": "dask",
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "preload": [str(HERE)],
        },
    }


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=tempfile.mkdtemp(prefix="bench-scale-prefect-"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), env.get("PYTHONPATH", "")]),
    )
    env.pop("PREFECT_API_URL", None)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1000], help="shard counts (one job each)")
    parser.add_argument("--runners", nargs="+", default=["local"], choices=["local", "dask-cluster", "dask-existing"])
    parser.add_argument("--storage", nargs="+", default=["local"], choices=["local", "s3"])
    parser.add_argument("--shard-size", type=int, default=2, help="images per shard (one batch)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--nfe", type=int, default=3, help="sampler steps = network calls per batch")
    parser.add_argument("--forward-s", type=float, default=0.5, help="simulated seconds per network call")
    parser.add_argument("--workers", type=int, default=1, help="model slots: local threads or Dask workers")
    parser.add_argument("--label", default="", help="a name for this set of rows (e.g. before / after)")
    parser.add_argument(
        "--set", dest="job", action="append", default=[], help="job field=JSON value, e.g. dispatch.window=4"
    )
    parser.add_argument(
        "--kill-after",
        type=float,
        default=0.0,
        help="SIGKILL a first run of each job this many seconds in (store build included), then resume it",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))))
        return
    os.environ[FORWARD_ENV] = str(args.forward_s)
    job_fields = _job_fields(args.job)
    rows = []
    from diffpir_flow.cli.seaweed import running_s3

    s3 = cluster = None
    with contextlib.ExitStack() as stack:
        for storage in args.storage:
            options: dict[str, Any] = {}
            if storage == "s3":
                s3 = s3 or stack.enter_context(
                    running_s3(Path(tempfile.mkdtemp()) / "seaweedfs", "bench-key", "bench-secret", ("bench",))
                )
                options = s3.storage_options()
            for kind in args.runners:
                address = None
                if kind == "dask-existing":
                    cluster = cluster or stack.enter_context(_existing_cluster(args.workers))
                    address = cluster.scheduler_address
                for shards in args.shards:
                    rows.append(_configuration(args, kind, storage, shards, options, address, job_fields))
                    _print_row(rows[-1])
                    _save(args, rows, table=False)  # a long matrix keeps what it measured so far
    _save(args, rows)


def _job_fields(items: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        target = fields
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = json.loads(value)
    return fields


def _existing_cluster(workers: int) -> Any:
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        preload=[str(HERE)],
    )


def _configuration(
    args: argparse.Namespace,
    kind: str,
    storage: str,
    shards: int,
    options: dict[str, Any],
    address: str | None,
    job_fields: dict[str, Any],
) -> dict[str, Any]:
    scratch = tempfile.mkdtemp(prefix="bench-scale-")
    work = f"s3://bench/{Path(scratch).name}" if storage == "s3" else scratch
    spec = {
        "work": work,
        "scratch": scratch,
        "storage_options": options,
        "shards": shards,
        "shard_size": args.shard_size,
        "size": args.size,
        "nfe": args.nfe,
        "runner": _runner(kind, args.workers, address),
        "slots": args.workers,
        "job": job_fields,
    }
    load = os.getloadavg()[0]
    killed: dict[str, Any] = {}
    if args.kill_after:
        killed = _killed_run(spec, args.kill_after)
        spec["resume"] = True
    done = subprocess.run(
        [sys.executable, str(HERE), "--child", json.dumps(spec)],
        env=_child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{kind}/{storage}/{shards} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return {
        "label": args.label,
        "runner": kind,
        "storage": storage,
        "shards": shards,
        "images": shards * args.shard_size,
        "shard_model_s": args.nfe * args.forward_s,
        "workers": args.workers,
        "load_avg_1m_before": round(load, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "job": job_fields,
        **killed,
        **json.loads(lines[-1][len("RESULT ") :]),
    }


def _killed_run(spec: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Start the job in a child process and SIGKILL it (and what it started) ``seconds`` into its run; the caller
    then runs the same job again, which must restore only what the killed run had not finished."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--child", json.dumps(spec)],
        env=_child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=seconds)
        raise SystemExit(
            f"the job to kill ended by itself after {time.perf_counter() - started:.0f} s; give a smaller --kill-after"
        )
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {"killed_after_s": round(time.perf_counter() - started, 1)}


_COLUMNS = (
    "label",
    "runner",
    "storage",
    "shards",
    "images",
    "wall_s",
    "model_s",
    "compute_share",
    "restore_share",
    "overhead_ms_per_shard",
    "peak_rss_mb",
    "task_runs_per_shard",
    "skipped",
    "rerun_s",
    "status_s",
    "load_avg_1m_after",
)


def _print_row(row: dict[str, Any]) -> None:
    print(" | ".join(f"{name}={row[name]}" for name in _COLUMNS), flush=True)


def _save(args: argparse.Namespace, rows: list[dict[str, Any]], table: bool = True) -> None:
    sys.path.insert(0, str(HERE.parent))
    from results import write_results

    previous = json.loads(args.out.read_text()).get("results", []) if args.out.is_file() else []
    keep = [row for row in previous if not any(_same(row, new) for new in rows)]
    if table:
        print(" | ".join(_COLUMNS))
        for row in keep + rows:
            print(" | ".join(str(row.get(name)) for name in _COLUMNS))
    write_results(
        args.out,
        {
            "config": {
                "image_size": args.size,
                "task": "sr x2 evaluate",
                "prior": "tiny UNet, sleeping forward",
                "torch_threads": 1,
                "cpus": os.cpu_count(),
            },
            "results": keep + rows,
        },
    )


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("label", "runner", "storage", "shards", "shard_model_s", "workers")
    return all(a.get(key) == b.get(key) for key in keys)


if __name__ == "__main__":
    main()
