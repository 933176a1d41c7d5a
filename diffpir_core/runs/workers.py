"""Dask workers configured for shard tasks: a worker plugin that calls
:func:`~diffpir_core.runs.priors.configure_process` in every worker (torch threads, no model-slot limit) and puts
glibc's malloc thresholds back to their dynamic values (see :mod:`diffpir_core.runs.threads` for why a worker needs
both). Imported only for Dask runners (``distributed`` is slow to import)."""

import contextlib
from collections import Counter
from typing import Any

import dask
from distributed import Client, WorkerPlugin
from distributed.comm import get_address_host

from diffpir_core.runs.environment import changed_environment
from diffpir_core.runs.job import Job
from diffpir_core.runs.priors import configure_process
from diffpir_core.runs.threads import restore_malloc_thresholds, split_cores

PLUGIN_NAME = "diffpir-threads"


class ShardThreads(WorkerPlugin):
    """Configures each worker for ``job``: torch threads ``threads`` (fixed for the job), else the worker machine's
    cores split over the task slots (``nthreads``) of every worker on that host."""

    def __init__(self, job: Job, threads: int | None, host_slots: dict[str, int]) -> None:
        self.job, self.threads, self.host_slots = job, threads, host_slots

    def setup(self, worker: Any) -> None:
        restore_malloc_thresholds()
        slots = self.host_slots.get(get_address_host(worker.address), worker.state.nthreads)
        configure_process(self.job, self.threads or split_cores(slots))


def host_slots(client: Client) -> dict[str, int]:
    """``{host: sum of worker nthreads}``: how many shard tasks the workers on each host run at once."""
    slots: Counter[str] = Counter()
    for address, info in client.scheduler_info(n_workers=-1).get("workers", {}).items():
        slots[get_address_host(address)] += int(info.get("nthreads", 1))
    return dict(slots)


def spawn_environ_restored() -> contextlib.AbstractContextManager[None]:
    """A Dask nanny writes ``distributed.nanny.pre-spawn-environ`` (``OMP_NUM_THREADS=1``, ...) into *this* process's
    environment before it spawns a worker and leaves it there; put the flow process's own values back."""
    return changed_environment(keep=dask.config.get("distributed.nanny.pre-spawn-environ", {}))
