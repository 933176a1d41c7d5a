"""A work unit: a few shards of one job, run as a pipeline on two single-thread executors. While the model restores
shard *k*, one reads and prepares shard *k + 1* and the other writes and records shard *k − 1*.

The unit holds a model slot only while the model runs (never while it waits for a read or a write), so another unit
with a shard ready computes meanwhile. Each shard has one writer and its record follows its data. A shard that fails
becomes a :class:`~diffpir_core.runs.failures.ShardFailure` and leaves a status file (attempt, error) for
``diffpir status``; the other shards go on, unless the storage endpoint is found down: then the unit stops. A unit
with failures raises :class:`~diffpir_core.runs.failures.UnitFailed`; Prefect retries it when a failure is transient,
and the retry skips the shards already done through their records (:func:`~diffpir_core.runs.shard.prepare_shard`).
"""

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.runs.failures import ShardFailure, UnitFailed, not_run, shard_failure, storage_endpoint
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, write_status
from diffpir_core.runs.priors import model_slot
from diffpir_core.runs.shard import Prepared, prepare_shard, restore_prepared, write_restored

log = logging.getLogger(__name__)


class _Unit:
    """One try of a unit: its stores (opened by the first read, so that failing to reach them is a shard's failure),
    the manifests of its finished shards and the failures of the others."""

    def __init__(self, job: Job, plan: JobPlan, attempt: int, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self.job, self.plan, self.attempt, self.logger = job, plan, attempt, logger
        self.endpoint = storage_endpoint([plan.input_store, plan.output_store], job.storage_options)
        self.manifests: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, ShardFailure] = {}
        self.stopped: ShardFailure | None = None  # the failure that found the storage endpoint down
        self._stores: tuple[DatasetStore, DatasetStore] | None = None

    def stores(self) -> tuple[DatasetStore, DatasetStore]:
        if self._stores is None:
            self._stores = (
                DatasetStore.open(self.plan.input_store, self.job.storage_options),
                DatasetStore.open(self.plan.output_store, self.job.storage_options, writable=True),
            )
        return self._stores

    def prepare(self, ref: ShardRef) -> Prepared:
        return prepare_shard(self.job, self.plan, *self.stores(), ref)

    def write(self, item: Prepared, restored: Any, timings: dict[str, float], batch_size: int) -> None:
        self.manifests[item.ref.key] = write_restored(
            self.job, self.plan, *self.stores(), item, restored, timings, batch_size, self.attempt
        )

    def result(self, ref: ShardRef, future: Future | None) -> Any:
        """What ``future`` (a read or write of ``ref``) returned; None when it failed, its failure recorded."""
        try:
            return None if future is None else future.result()
        except Exception as err:
            self.fail(ref, err)
            return None

    def fail(self, ref: ShardRef, err: BaseException) -> None:
        failure = shard_failure(ref.key, err, self.endpoint)
        self.failures[ref.key] = failure
        if failure.unreachable:  # no status write to a dead endpoint
            self.stopped = self.stopped or failure
            return
        if failure.transient and self.attempt <= self.job.retries:  # a final failure is logged once, by the flow
            log.warning("shard %s attempt %d failed, to be retried: %s", ref.key, self.attempt, failure)
        try:
            write_status(
                self.plan, ref, self.job.storage_options, state="failed", attempts=self.attempt, error=str(failure)
            )
        except Exception as status_err:  # the store may be what is failing; the flow still reports the shard
            log.warning("could not write the status of shard %s: %s", ref.key, status_err)

    def run(self, shards: list[ShardRef]) -> None:
        """The pipeline over ``shards``: read one ahead, compute (holding a model slot), write one behind."""
        with ThreadPoolExecutor(1, "unit-read") as reader, ThreadPoolExecutor(1, "unit-write") as writer:
            ahead: Future | None = reader.submit(self.prepare, shards[0]) if shards else None
            behind: tuple[ShardRef, Future] | None = None
            for index, ref in enumerate(shards):
                item: Prepared | None = self.result(ref, ahead)
                more = index + 1 < len(shards) and self.stopped is None
                ahead = reader.submit(self.prepare, shards[index + 1]) if more else None
                if item is not None and item.skipped is not None:
                    self.manifests[ref.key] = item.skipped
                elif item is not None:
                    try:
                        with model_slot():
                            restored, timings, batch_size = restore_prepared(self.job, self.plan, item, self.logger)
                    except Exception as err:
                        self.fail(ref, err)
                        continue
                    if behind is not None:
                        self.result(*behind)  # one write behind at most, waited for without the model slot
                    behind = (ref, writer.submit(self.write, item, restored, timings, batch_size))
                if self.stopped is not None:
                    break
            if behind is not None:
                self.result(*behind)
        if self.stopped is not None:
            for ref in shards:
                if ref.key not in self.manifests and ref.key not in self.failures:
                    self.failures[ref.key] = not_run(ref.key, self.stopped)


def run_unit(
    job: Job,
    plan: JobPlan,
    shards: list[ShardRef],
    attempt: int = 1,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> dict[str, Any]:
    """Restore the shards of one work unit: ``{"manifests", "failed"}`` (no failures), else raise
    :class:`UnitFailed` once every shard that could be done is. ``attempt``: the unit's try (Prefect's run count),
    written in the status and records; ``logger`` gets the per-image progress lines."""
    unit = _Unit(job, plan, attempt, logger)
    unit.run(shards)
    if attempt > 1:  # the status of this run's earlier failed tries must go
        for ref in shards:
            if unit.manifests.get(ref.key, {}).get("status") == "restored":
                write_status(plan, ref, job.storage_options, state="done", attempts=attempt, error=None)
    if unit.failures:
        raise UnitFailed(list(unit.failures.values()), unit.manifests)
    return {"manifests": unit.manifests, "failed": {}}


def unit_name(shards: list[ShardRef]) -> str:
    """``restore-64x64/000003`` for one shard, ``restore-64x64/000000..000015`` for a unit of several."""
    first, last = shards[0].key, shards[-1].key
    return f"restore-{first}" if first == last else f"restore-{first}..{last.rsplit('/', 1)[-1]}"
