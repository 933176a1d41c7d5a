"""How a cell's shards are dealt out: shards per work unit, model slots, GPU resources per unit, and the guard
against GPU tasks no Dask worker can take (such a task would stay Pending forever)."""

import time
from typing import Any

from diffpir_core.runs.job import DaskRunner, Job
from diffpir_core.runs.plan import MAX_AUTO_UNIT

DASK_AUTO_UNIT = 64
"""Shards per work unit at most on Dask when the job leaves ``dispatch.unit_shards`` to the flow. A Dask worker thread
runs its units one after another, so each unit's start (the task crossing the scheduler, its Prefect task run, its
first read: ≈ 2–5 s) is not hidden behind the previous unit's computation as on the local runner, and is shared by
more shards instead."""


def auto_unit_shards(job: Job) -> int:
    """Shards per work unit at most when ``dispatch.unit_shards`` is null: :data:`diffpir_core.runs.plan.MAX_AUTO_UNIT` on the local
    runner (whose next unit starts while one computes), :data:`DASK_AUTO_UNIT` on Dask."""
    return DASK_AUTO_UNIT if isinstance(job.runner, DaskRunner) else MAX_AUTO_UNIT


def gpus_per_task(job: Job, device: str) -> int:
    """GPU resources one shard task asks for: the runner's setting, else 1 on CUDA and 0 elsewhere."""
    spec = job.runner
    if not isinstance(spec, DaskRunner):
        return 0
    if spec.gpus_per_task is not None:
        return spec.gpus_per_task
    return 1 if device.startswith("cuda") else 0


def worker_gpu_capacity(task_runner: Any) -> dict[str, float]:
    """``{worker address: GPU resource}`` of the Dask workers behind ``task_runner`` ({} if not Dask)."""
    client = getattr(task_runner, "client", None)
    if client is None:
        return {}
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return {addr: float(info.get("resources", {}).get("GPU", 0)) for addr, info in workers.items()}


def check_gpu_workers(task_runner: Any, gpus: int, wait_s: float) -> None:
    """Raise ``RuntimeError`` unless some Dask worker offers ``gpus`` GPU resources within ``wait_s``."""
    if gpus <= 0:
        return
    deadline = time.monotonic() + wait_s
    while True:
        capacity = worker_gpu_capacity(task_runner)
        if any(v >= gpus for v in capacity.values()):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    seen = ", ".join(f"{a}: GPU={v:g}" for a, v in sorted(capacity.items())) or "no workers"
    raise RuntimeError(
        f"each shard task asks for GPU={gpus}, but no Dask worker offers that after {wait_s:g} s ({seen}). "
        "Start one worker per GPU with `dask worker ... --resources GPU=1` (for a created cluster pass "
        "runner.cluster_kwargs.resources: {GPU: 1}), or set runner.gpus_per_task: 0 to run without GPU slots."
    )


def model_slots(job: Job, task_runner: Any, gpus: int) -> int:
    """How many work units can run at once: the local runner's threads, else the Dask workers' threads (or the
    units their GPU resources admit); at least 1 (an adaptive cluster may have no worker yet)."""
    if not isinstance(job.runner, DaskRunner):
        return job.runner.max_workers
    client = getattr(task_runner, "client", None)
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values() if client is not None else []
    if gpus > 0:
        return max(1, sum(int(info.get("resources", {}).get("GPU", 0) // gpus) for info in workers))
    return max(1, sum(int(info.get("nthreads", 1)) for info in workers))
