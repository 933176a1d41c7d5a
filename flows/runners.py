"""Task runners built from a job's ``runner`` section.

The local runner is always bounded (Prefect's default thread pool is unbounded). The Dask runner
connects to a scheduler or creates a cluster; shard tasks ask for ``GPU`` worker resources through
Dask annotations, so one GPU task runs per GPU (:mod:`diffpir_core.runs.dispatch` sizes units and slots).

The local runner's pool has a thread per work unit in flight (two per model slot by default), and this process as
many model slots as ``max_workers`` (:func:`diffpir_core.runs.priors.use_model_slots`). The job's ``threads`` is applied here: in
the flow process (whose threads run the local runner's shards) and, through :mod:`diffpir_flow.flows.dask_threads`, in every Dask
worker.
"""

import contextlib
from collections.abc import Iterator

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from diffpir_core.runs.job import DaskRunner, Job
from diffpir_core.runs.priors import use_model_slots, use_threads
from diffpir_core.runs.threads import default_threads, env_threads


def build_task_runner(job: Job, threads: int | None = None) -> TaskRunner:
    """The task runner the shard tasks of ``job`` run on; sets this (the flow's) process's torch threads first:
    ``threads`` (the run plan's, fixed for the job), else the job's, else ``OMP_NUM_THREADS``, else the cores split over
    the local runner's ``max_workers``. Dask workers get the same fixed count (else ``OMP_NUM_THREADS`` of this
    process) or split their host's cores themselves."""
    spec = job.runner
    threads = threads or job.threads
    if isinstance(spec, DaskRunner):
        from diffpir_flow.flows.dask_threads import ThreadedDaskTaskRunner

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


@contextlib.contextmanager
def gpu_annotations(gpus: int) -> Iterator[None]:
    """Dask ``resources`` annotations around ``.map``/``.submit`` calls; a no-op for 0 GPUs."""
    if gpus <= 0:
        yield
        return
    import dask

    with dask.annotate(resources={"GPU": gpus}):
        yield
