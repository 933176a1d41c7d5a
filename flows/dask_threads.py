"""The ``threads`` job field on Dask: a worker plugin that sets torch's threads (and glibc's malloc thresholds) in
every worker, and the Dask task runner that registers it as soon as it connects.

Imported only for Dask runners (``distributed`` is slow to import). See :mod:`diffpir_core.runs.threads` for why a
worker needs both settings.
"""

import contextlib
from collections import Counter
from typing import Any

import dask
from distributed import Client, WorkerPlugin
from distributed.comm import get_address_host
from prefect_dask import DaskTaskRunner

from diffpir_core.runs.environment import changed_environment
from diffpir_core.runs.priors import use_threads
from diffpir_core.runs.threads import restore_malloc_thresholds, split_cores

PLUGIN_NAME = "diffpir-threads"


class ShardThreads(WorkerPlugin):
    """Sets each worker's torch threads: the job's ``threads``, else the worker machine's cores split over the
    task slots (``nthreads``) of every worker on that host; and glibc's malloc thresholds back to their dynamic values."""

    def __init__(self, threads: int | None, host_slots: dict[str, int]) -> None:
        self.threads = threads
        self.host_slots = host_slots

    def setup(self, worker: Any) -> None:
        restore_malloc_thresholds()
        slots = self.host_slots.get(get_address_host(worker.address), worker.state.nthreads)
        use_threads(self.threads or split_cores(slots))


def host_slots(client: Client) -> dict[str, int]:
    """``{host: sum of worker nthreads}``: how many shard tasks the workers on each host run at once."""
    slots: Counter[str] = Counter()
    for address, info in client.scheduler_info(n_workers=-1).get("workers", {}).items():
        slots[get_address_host(address)] += int(info.get("nthreads", 1))
    return dict(slots)


def _spawn_environ_restored() -> contextlib.AbstractContextManager[None]:
    """A Dask nanny writes ``distributed.nanny.pre-spawn-environ`` (``OMP_NUM_THREADS=1``, ...) into *this* process's
    environment before it spawns a worker and leaves it there; put the flow process's own values back."""
    return changed_environment(keep=dask.config.get("distributed.nanny.pre-spawn-environ", {}))


class ThreadedDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's ``DaskTaskRunner`` that registers :class:`ShardThreads` on the cluster when it connects."""

    def __init__(self, *, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threads = threads

    def duplicate(self) -> "ThreadedDaskTaskRunner":
        copy = super().duplicate()
        copy.threads = self.threads
        return copy

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and getattr(other, "threads", None) == self.threads

    __hash__ = None  # type: ignore[assignment]

    @property
    def client(self) -> Any:
        """The Dask client (created on first use, with the thread plugin registered on every worker)."""
        if self._client is not None:
            return self._client
        with _spawn_environ_restored():
            client = DaskTaskRunner.client.fget(self)  # type: ignore[attr-defined]
        client.register_plugin(ShardThreads(self.threads, host_slots(client)), name=PLUGIN_NAME)
        return client
