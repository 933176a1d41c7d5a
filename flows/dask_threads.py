"""The Dask task runner that configures every worker for the job's shard tasks as soon as it connects
(:class:`diffpir_core.runs.workers.ShardThreads`). Imported only for Dask runners."""

from typing import Any

from prefect_dask import DaskTaskRunner

from diffpir_core.runs.job import Job
from diffpir_core.runs.workers import PLUGIN_NAME, ShardThreads, host_slots, spawn_environ_restored


class ThreadedDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's ``DaskTaskRunner`` that registers :class:`ShardThreads` for ``job`` (torch ``threads``, None:
    each
    host splits its cores) on the cluster when it connects."""

    def __init__(self, *, job: Job | None = None, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job, self.threads = job, threads

    def duplicate(self) -> "ThreadedDaskTaskRunner":
        copy = super().duplicate()
        copy.job, copy.threads = self.job, self.threads
        return copy

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and (getattr(other, "job", None), getattr(other, "threads", None)) == (
            self.job,
            self.threads,
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def client(self) -> Any:
        """The Dask client (created on first use, with the plugin registered on every worker)."""
        if self._client is not None:
            return self._client
        with spawn_environ_restored():
            client = DaskTaskRunner.client.fget(self)  # type: ignore[attr-defined]
        assert self.job is not None, "ThreadedDaskTaskRunner(job=...) configures the workers for that job"
        client.register_plugin(ShardThreads(self.job, self.threads, host_slots(client)), name=PLUGIN_NAME)
        return client
