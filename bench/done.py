"""The done decision at scale: ``diffpir status`` and the re-run of a finished job of many shards, and their memory.

A finished job of ``--shards`` shards (``--shard-size`` random 32² images each, SR ×2 evaluate, PSNR) is made with
the run layer's own per-shard steps (``prepare_shard`` stores and records the measurements, ``write_restored``
writes the restored shard, its metric rows and its record), the sampler replaced by a bicubic upscale, so that
10,000 shards are made in minutes instead of an hour of ``bench/scale.py``. Then, each in a fresh process: ``diffpir
status --json`` (wall, peak RSS), and the re-run of the finished job with the ``run`` flow (every shard skipped;
wall, peak RSS). Works with the code of any revision that has these functions: run a copy of this file with that
revision's environment (``<checkout>/.venv/bin/python <checkout>/bench/done.py``).

Usage: ``python bench/done.py --shards 1000 10000 --label after`` (``--storage s3`` for SeaweedFS on 127.0.0.1).
Prints a table and writes ``bench/results/done.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results" / "done.json"
COLUMNS = ("label", "storage", "shards", "build_s", "status_s", "status_rss_mb", "rerun_s", "rerun_rss_mb", "skipped")


def _job(work: str, scratch: str, options: dict[str, Any], shard_size: int) -> Any:
    from diffpir_core.runs.job import parse_job

    return parse_job(
        {
            "input": f"{work}/input.zarr",
            "output": f"{work}/out",
            "mode": "evaluate",
            "task": {"kind": "sr", "scale": 2, "noise_sigma": 0.0},
            "prior": f"{scratch}/tiny.safetensors",
            "sampler": {"iter_num": 1},
            "shard_size": shard_size,
            "batch_size": shard_size,
            "device": "cpu",
            "runner": {"kind": "local", "max_workers": 1},
            "metrics": ["psnr"],
            "storage_options": options,
            "report": {"samples": 0, "extremes": 0},
        }
    )


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """Make the input store and a finished job of ``spec["shards"]`` shards with the run layer's own steps."""
    import numpy as np
    import torch
    from scale import TINY_UNET, _make_store

    from diffpir_core.io import DatasetStore
    from diffpir_core.io.outputs import claim_output
    from diffpir_core.models import build_unet, save_prior
    from diffpir_core.runs.prepare import plan_job
    from diffpir_core.runs.shard import prepare_shard, write_restored

    torch.set_num_threads(1)
    work, options = spec["work"], spec["storage_options"]
    started = time.perf_counter()
    torch.manual_seed(0)
    save_prior(build_unet(**TINY_UNET), Path(spec["scratch"]) / "tiny.safetensors", TINY_UNET)
    _make_store(f"{work}/input.zarr", options, spec["shards"], spec["shard_size"], 32)
    job = _job(work, spec["scratch"], options, spec["shard_size"])
    claim_output(job.output, job.input, options)
    plan = plan_job(job, f"{work}/input.zarr")
    source = DatasetStore.open(plan.input_store, options)
    out = DatasetStore.open(plan.output_store, options, writable=True)

    def finish(ref: Any) -> None:
        item = prepare_shard(job, plan, source, out, ref)
        assert item.inputs is not None
        y = item.inputs.y.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        restored = (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        write_restored(
            job, plan, source, out, item, np.ascontiguousarray(restored), {"sample": 0.0}, spec["shard_size"], 1
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(finish, out.shards()))
    return {"build_s": round(time.perf_counter() - started, 1)}


def status(spec: dict[str, Any]) -> dict[str, Any]:
    """``diffpir status --json`` of the finished job, in this process (imports excluded from the time)."""
    from typer.testing import CliRunner

    import diffpir_core.reporting.text
    import diffpir_core.runs.status  # noqa: F401  (imported by the command: outside the time)
    from diffpir_flow.cli.app import app

    args = ["status", f"{spec['work']}/out", "--json"]
    args += [f"-o{key}={value}" for key, value in spec["storage_options"].items() if isinstance(value, str)]
    started = time.perf_counter()
    result = CliRunner().invoke(app, args)
    seconds = time.perf_counter() - started
    counts = json.loads(result.output)["jobs"][0]["counts"]
    assert counts["done"] == spec["shards"], counts
    return {"status_s": round(seconds, 2), "status_rss_mb": _rss()}


def rerun(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``run`` flow on the finished job (a temporary Prefect server started outside the time)."""
    import torch
    from prefect import flow

    from diffpir_flow.flows.run import run

    torch.set_num_threads(1)

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        """Starts Prefect's temporary server outside the timed run."""

    warm_up()
    job = _job(spec["work"], spec["scratch"], spec["storage_options"], spec["shard_size"])
    started = time.perf_counter()
    state = run(job=job, return_state=True)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise SystemExit(f"re-run failed: {state.message}")
    return {"rerun_s": round(seconds, 2), "rerun_rss_mb": _rss(), "skipped": state.result()["skipped"]}


def _rss() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(step: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=tempfile.mkdtemp(prefix="bench-done-prefect-"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]),
    )
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, str(HERE), "--child", step, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{step} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1000])
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--storage", nargs="+", default=["local"], choices=["local", "s3"])
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, spec = args.child
        print("RESULT " + json.dumps({"build": build, "status": status, "rerun": rerun}[step](json.loads(spec))))
        return
    from diffpir_flow.cli.seaweed import running_s3

    rows = []
    with contextlib.ExitStack() as stack:
        for storage in args.storage:
            options: dict[str, Any] = {}
            if storage == "s3":
                s3 = stack.enter_context(
                    running_s3(Path(tempfile.mkdtemp()) / "seaweedfs", "bench-key", "bench-secret", ("bench",))
                )
                options = s3.storage_options()
            for shards in args.shards:
                scratch = tempfile.mkdtemp(prefix="bench-done-")
                work = f"s3://bench/{Path(scratch).name}" if storage == "s3" else scratch
                spec = {
                    "work": work,
                    "scratch": scratch,
                    "storage_options": options,
                    "shards": shards,
                    "shard_size": args.shard_size,
                }
                row = {
                    "label": args.label,
                    "storage": storage,
                    "shards": shards,
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                for step in ("build", "status", "rerun"):
                    row.update(_child(step, spec))
                rows.append(row)
                print(" | ".join(f"{name}={row.get(name)}" for name in COLUMNS), flush=True)
    sys.path.insert(0, str(HERE.parent))
    from results import write_results

    previous = json.loads(args.out.read_text()).get("results", []) if args.out.is_file() else []
    keep = [
        old
        for old in previous
        if not any(all(old.get(k) == new.get(k) for k in ("label", "storage", "shards")) for new in rows)
    ]
    print(" | ".join(COLUMNS))
    for row in keep + rows:
        print(" | ".join(str(row.get(name)) for name in COLUMNS))
    write_results(
        args.out,
        {
            "config": {"image_size": 32, "task": "sr x2 evaluate", "torch_threads": 1, "cpus": os.cpu_count()},
            "results": keep + rows,
        },
    )


if __name__ == "__main__":
    main()
