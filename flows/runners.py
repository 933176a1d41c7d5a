"""Task runners built from a job's ``runner`` section.

The local runner is always bounded (Prefect's default thread pool is unbounded): a thread per work unit in flight
(two per model slot by default), while :func:`diffpir_core.runs.priors.configure_process` gives the process only
``max_workers`` model slots. The Dask runner connects to a scheduler or creates a cluster, and configures every worker
(:mod:`diffpir_flow.flows.dask_threads`); shard tasks ask for ``GPU`` worker resources through Dask annotations, so one
GPU task runs per GPU (:mod:`diffpir_core.runs.dispatch` sizes units and slots).
"""

import contextlib
from collections.abc import Iterator

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from diffpir_core.runs.job import Job
from diffpir_core.runs.options import DaskRunner
from diffpir_core.runs.threads import env_threads


def build_task_runner(job: Job, threads: int | None = None) -> TaskRunner:
    """The task runner the shard tasks of ``job`` run on. Dask workers get ``threads`` (the run plan's, fixed for the
    job), else the job's, else ``OMP_NUM_THREADS`` of this process, or split their host's cores themselves."""
    spec = job.runner
    if not isinstance(spec, DaskRunner):
        return ThreadPoolTaskRunner(max_workers=max(spec.max_workers, job.dispatch.units_in_flight(spec.max_workers)))
    from diffpir_flow.flows.dask_threads import ThreadedDaskTaskRunner

    fixed = (
        threads or job.threads or env_threads()
    )  # read before a created cluster's nannies set OMP_NUM_THREADS=1 here
    if spec.address:
        return ThreadedDaskTaskRunner(job=job, threads=fixed, address=spec.address)
    return ThreadedDaskTaskRunner(
        job=job,
        threads=fixed,
        cluster_class=spec.cluster_class,
        cluster_kwargs=dict(spec.cluster_kwargs),
        adapt_kwargs=dict(spec.adapt_kwargs) or None,
    )


@contextlib.contextmanager
def gpu_annotations(gpus: int) -> Iterator[None]:
    """Dask ``resources`` annotations around ``.map``/``.submit`` calls; a no-op for 0 GPUs."""
    if gpus <= 0:
        yield
        return
    import dask

    with dask.annotate(resources={"GPU": gpus}):
        yield
