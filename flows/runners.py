"""Task runners built from a job's ``runner`` section, and the guard against GPU tasks no worker can take.

The local runner is always bounded (Prefect's default thread pool is unbounded). The Dask runner
connects to a scheduler or creates a cluster; shard tasks ask for ``GPU`` worker resources through
Dask annotations, so one GPU task runs per GPU. A task that asks for a resource no worker has would
stay Pending forever in Dask, so :func:`check_gpu_workers` fails the run with a clear message first.

The local runner's pool has a thread per work unit in flight (two per model slot by default), and this process as
many model slots as ``max_workers`` (:func:`tasks.priors.use_model_slots`). The job's ``threads`` is applied here: in
the flow process (whose threads run the local runner's shards) and, through :mod:`flows.dask_threads`, in every Dask
worker.
"""

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from diffpir_core.job import DaskRunner, Job
from diffpir_core.threads import default_threads, env_threads
from tasks.plan import MAX_AUTO_UNIT
from tasks.priors import use_model_slots, use_threads


def build_task_runner(job: Job, threads: int | None = None) -> TaskRunner:
    """The task runner the shard tasks of ``job`` run on; sets this (the flow's) process's torch threads first:
    ``threads`` (the run plan's, fixed for the job), else the job's, else ``OMP_NUM_THREADS``, else the cores split over
    the local runner's ``max_workers``. Dask workers get the same fixed count (else ``OMP_NUM_THREADS`` of this
    process) or split their host's cores themselves."""
    spec = job.runner
    threads = threads or job.threads
    if isinstance(spec, DaskRunner):
        from flows.dask_threads import ThreadedDaskTaskRunner

        fixed = threads or env_threads()  # read before a created cluster's nannies set OMP_NUM_THREADS=1 here
        use_threads(fixed or default_threads(1))
        use_model_slots(None)
        if spec.address:
            return ThreadedDaskTaskRunner(threads=fixed, address=spec.address)
        return ThreadedDaskTaskRunner(
            threads=fixed,
            cluster_class=spec.cluster_class,
            cluster_kwargs=dict(spec.cluster_kwargs),
            adapt_kwargs=dict(spec.adapt_kwargs) or None,
        )
    use_threads(threads or default_threads(spec.max_workers))
    use_model_slots(spec.max_workers)  # the pool runs more units than that: the next one starts while one computes
    return ThreadPoolTaskRunner(max_workers=max(spec.max_workers, job.dispatch.units_in_flight(spec.max_workers)))


DASK_AUTO_UNIT = 64
"""Shards per work unit at most on Dask when the job leaves ``dispatch.unit_shards`` to the flow. A Dask worker thread
runs its units one after another, so each unit's start (the task crossing the scheduler, its Prefect task run, its
first read: ≈ 2–5 s) is not hidden behind the previous unit's computation as on the local runner, and is shared by
more shards instead."""


def auto_unit_shards(job: Job) -> int:
    """Shards per work unit at most when ``dispatch.unit_shards`` is null: :data:`tasks.plan.MAX_AUTO_UNIT` on the local
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


@contextlib.contextmanager
def gpu_annotations(gpus: int) -> Iterator[None]:
    """Dask ``resources`` annotations around ``.map``/``.submit`` calls; a no-op for 0 GPUs."""
    if gpus <= 0:
        yield
        return
    import dask

    with dask.annotate(resources={"GPU": gpus}):
        yield


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
