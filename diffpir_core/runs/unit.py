"""A work unit: a few shards of one job run as a pipeline, while the model restores shard *k*, one thread reads and
prepares shard *k + 1* and another writes and records shard *k − 1*.

Every failed attempt leaves a status file (attempt count, error) for ``diffpir status``; transient errors are
retried in the unit with backoff (``job.retries``, ``job.retry_delay_s`` doubling), permanent ones fail the shard
at once; the other shards of the unit go on.
"""

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.runs import failures
from diffpir_core.runs.failures import describe, is_transient, storage_endpoint
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, write_status
from diffpir_core.runs.priors import ModelSlot
from diffpir_core.runs.shard import prepare_shard, restore_prepared, write_restored

log = logging.getLogger(__name__)


_DONE = object()


class ShardPipeline:
    """Read ahead one shard and write behind one shard while the calling thread runs the model.

    ``run(shards)`` returns ``{key: manifest}`` and ``{key: exception}`` for one pass over ``shards``; each stage
    handles one shard at a time, in order, so a shard's data and record are written by the writer thread alone.
    """

    def __init__(
        self,
        job: Job,
        plan: JobPlan,
        attempts: dict[str, int],
        on_error: Callable[[ShardRef, BaseException], BaseException],
        logger: logging.Logger | logging.LoggerAdapter = log,
    ):
        self.job, self.plan, self.attempts, self.on_error, self.logger = job, plan, attempts, on_error, logger
        self.breaker = breaker_key(job, plan)
        self._stores: tuple[DatasetStore, DatasetStore] | None = None

    def stores(self) -> tuple[DatasetStore, DatasetStore]:
        """(input, output) store, opened on first use by the reader, so that failing to reach them is a shard's error."""
        if self._stores is None:
            self._stores = (
                DatasetStore.open(self.plan.input_store, self.job.storage_options),
                DatasetStore.open(self.plan.output_store, self.job.storage_options, writable=True),
            )
        return self._stores

    def run(self, shards: list[ShardRef]) -> tuple[dict[str, dict[str, Any]], dict[str, BaseException]]:
        manifests: dict[str, dict[str, Any]] = {}
        errors_: dict[str, BaseException] = {}
        ready: queue.Queue[Any] = queue.Queue(maxsize=1)
        behind: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def fail(ref: ShardRef, err: BaseException) -> None:
            errors_[ref.key] = self.on_error(ref, err)

        def read() -> None:
            for ref in shards:
                if stop.is_set():
                    break
                try:
                    failures.BREAKER.check(*self.breaker)  # a shard is not even read once its endpoint is plainly down
                    ready.put(prepare_shard(self.job, self.plan, *self.stores(), ref))
                except Exception as err:
                    fail(ref, err)
            ready.put(_DONE)

        def write() -> None:
            while (work := behind.get()) is not _DONE:
                item, restored, timings, batch_size = work
                try:
                    manifests[item.ref.key] = write_restored(
                        self.job, self.plan, *self.stores(), item, restored, timings, batch_size, self.attempts[item.ref.key]
                    )
                    failures.BREAKER.succeeded(*self.breaker)
                except Exception as err:
                    fail(item.ref, err)

        reader = threading.Thread(target=read, name="unit-read", daemon=True)
        writer = threading.Thread(target=write, name="unit-write", daemon=True)
        reader.start()
        writer.start()
        slot = ModelSlot()
        try:
            while (item := _next_ready(ready, slot)) is not _DONE:
                if item.skipped is not None:
                    manifests[item.ref.key] = item.skipped
                    continue
                slot.take()
                try:
                    restored, timings, batch_size = restore_prepared(self.job, self.plan, item, self.logger)
                except Exception as err:
                    fail(item.ref, err)
                    continue
                behind.put((item, restored, timings, batch_size))
        finally:
            slot.release()  # before the last write: the next unit computes while this one writes behind
            stop.set()
            while reader.is_alive():  # unblock a reader waiting to hand over a shard nobody will take
                try:
                    ready.get(timeout=0.1)
                except queue.Empty:
                    pass
            behind.put(_DONE)
            writer.join()
        return manifests, errors_


def _next_ready(ready: "queue.Queue[Any]", slot: ModelSlot) -> Any:
    """The next prepared shard; the model slot is let go while the reader is still on it (another unit may compute)."""
    try:
        return ready.get_nowait()
    except queue.Empty:
        slot.release()
        return ready.get()


def breaker_key(job: Job, plan: JobPlan) -> tuple[str, str | None]:
    """(run, storage endpoint) under which the storage breaker counts this run's connection failures."""
    return f"{plan.job_hash}@{plan.planned_at}", storage_endpoint([plan.input_store, plan.output_store], job.storage_options)


def run_unit(
    job: Job, plan: JobPlan, shards: list[ShardRef], first_attempt: int = 1, logger: logging.Logger | logging.LoggerAdapter = log
) -> dict[str, Any]:
    """Restore the shards of one work unit: ``{"manifests", "failed"}``; ``first_attempt`` counts on from an earlier
    try of the same unit, ``logger`` gets the per-image progress lines.

    Shards that failed with a transient error go through the pipeline again after the job's retry delay (doubling,
    20 % jitter) until ``job.retries`` retries are spent; every failed attempt writes the shard's status file."""
    attempts = {ref.key: first_attempt for ref in shards}
    run, endpoint = breaker_key(job, plan)

    def on_error(ref: ShardRef, err: BaseException) -> BaseException:
        if is_transient(err) and attempts[ref.key] - first_attempt < job.retries:  # a final failure is logged once, by the unit
            log.warning("shard %s attempt %d failed, to be retried: %s", ref.key, attempts[ref.key], describe(err))
        # module attribute, not a name imported here: Dask pickles this task by value, and the breaker (a lock) cannot travel
        if unreachable := failures.BREAKER.failed(run, endpoint, ref.key, err):
            return unreachable  # permanent: no more retries, and no status write to a dead endpoint
        if not isinstance(err, failures.EndpointUnreachable):
            _write_failed_status(plan, ref, job, attempts[ref.key], err)
        return err

    pipeline = ShardPipeline(job, plan, attempts, on_error, logger)
    manifests: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    todo, delay = list(shards), job.retry_delay_s
    while todo:
        done, raised = pipeline.run(todo)
        manifests.update(done)
        retry = [ref for ref in todo if ref.key in raised and is_transient(raised[ref.key]) and attempts[ref.key] - first_attempt < job.retries]
        failed.update({key: describe(err) for key, err in raised.items() if key not in {ref.key for ref in retry}})
        for ref in retry:
            attempts[ref.key] += 1
        todo = retry
        if todo:
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay *= 2
    for ref in shards:
        if manifests.get(ref.key, {}).get("status") == "restored" and attempts[ref.key] > 1:  # this run's failed status must go
            write_status(plan, ref, job.storage_options, state="done", attempts=attempts[ref.key], error=None)
    return {"manifests": manifests, "failed": failed}


def _write_failed_status(plan: JobPlan, ref: ShardRef, job: Job, attempt: int, err: BaseException) -> None:
    try:
        write_status(plan, ref, job.storage_options, state="failed", attempts=attempt, error=describe(err))
    except Exception as status_err:  # the store may be what is failing; the flow still reports the shard.
        log.warning("could not write the status of shard %s: %s", ref.key, status_err)


def unit_name(shards: list[ShardRef]) -> str:
    """``restore-64x64/000003`` for one shard, ``restore-64x64/000000..000015`` for a unit of several."""
    first, last = shards[0].key, shards[-1].key
    return f"restore-{first}" if first == last else f"restore-{first}..{last.rsplit('/', 1)[-1]}"
