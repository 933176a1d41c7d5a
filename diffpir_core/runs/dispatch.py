"""How a cell's shards are dealt out: shards per work unit, model slots, GPU resources per unit, the guard against
GPU tasks no Dask worker can take (such a task would stay Pending forever), and when to stop submitting units because
the storage endpoint is down (:class:`Outage`, one per flow run: a Dask worker's units count as the local ones)."""

import time
from typing import Any

from diffpir_core.io import ShardRef
from diffpir_core.runs.failures import ShardFailure, UnitFailed, not_run, shard_failure
from diffpir_core.runs.job import Job
from diffpir_core.runs.options import DaskRunner
from diffpir_core.runs.plan import MAX_AUTO_UNIT, JobPlan
from diffpir_core.runs.shard import already_done

DASK_AUTO_UNIT = 64
"""Shards per work unit at most on Dask when the job leaves ``dispatch.unit_shards`` to the flow. A Dask worker thread
runs its units one after another, so each unit's start (the task crossing the scheduler, its Prefect task run, its
first read: ≈ 2–5 s) is not hidden behind the previous unit's computation as on the local runner, and is shared by
more shards instead."""


def auto_unit_shards(job: Job) -> int:
    """Shards per work unit at most when ``dispatch.unit_shards`` is null: :data:`diffpir_core.runs.plan.MAX_AUTO_UNIT`
    on the local
    runner (whose next unit starts while one computes), :data:`DASK_AUTO_UNIT` on Dask."""
    return DASK_AUTO_UNIT if isinstance(job.runner, DaskRunner) else MAX_AUTO_UNIT


def gpus_per_task(job: Job, device: str) -> int:
    """GPU resources one work unit asks for: the runner's setting, else 1 on CUDA and 0 elsewhere."""
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
        f"each work unit asks for GPU={gpus}, but no Dask worker offers that after {wait_s:g} s ({seen}). "
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


OUTAGE_UNITS = 2
"""Work units in a row stopped by an unreachable storage endpoint after which a flow run submits no more."""


class Outage:
    """The work units of one flow run that found the storage endpoint down, in a row: after :data:`OUTAGE_UNITS`
    of them :attr:`cause` is set, and the shards of units not yet submitted are :meth:`not_run`."""

    def __init__(self, units: int = OUTAGE_UNITS) -> None:
        self.units, self.streak = units, 0
        self.cause: ShardFailure | None = None

    def record(self, failures: list[ShardFailure]) -> None:
        """Count a finished unit's ``failures``: a unit that reached its endpoint ends the streak."""
        down = next((f for f in failures if f.unreachable), None)
        self.streak = self.streak + 1 if down else 0
        if down is not None and self.streak >= self.units:
            self.cause = down

    def not_run(self, units: list[list[ShardRef]]) -> dict[str, ShardFailure]:
        """Failures of the shards of ``units``, left alone because the endpoint is down."""
        assert self.cause is not None
        return {ref.key: not_run(ref.key, self.cause) for unit in units for ref in unit}


def unit_outcome(
    job: Job, plan: JobPlan, unit: list[ShardRef], result: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, ShardFailure]]:
    """(manifests of finished shards, failures of the others) of a unit from what its task returned or raised: a
    unit that ended otherwise than with :class:`UnitFailed` (a crashed worker) keeps what its records show done."""
    if isinstance(result, UnitFailed):
        return result.manifests, {failure.shard: failure for failure in result.failures}
    if isinstance(result, BaseException):
        found = already_done(job, plan, unit)
        return found, {ref.key: shard_failure(ref.key, result) for ref in unit if ref.key not in found}
    return result["manifests"], {}
