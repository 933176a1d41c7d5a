"""``restore_unit``: one Prefect task per work unit (a few shards of one job). It writes its outputs itself and
returns a small manifest per shard, and the reasons of the shards that failed.

Order of work per shard, so that a shard is either done (data + matching record) or simply not done:
1. the record already matches (job hash, model sha256, code version, input checksum, data checksum):
   a ``skipped`` manifest, without loading the prior;
2. evaluate mode: reuse the stored measurements if their record matches, else synthesise and store them;
3. restore in batches with the process-wide prior; write the whole shard; score it (the metric rows go into the
   record, so the metrics phase and re-runs need not read the shard again); then its record.

The three steps are a pipeline (:class:`ShardPipeline`): while the model restores shard *k*, one thread reads and
prepares shard *k + 1* and another writes and records shard *k − 1*. Each shard still has one writer (the unit),
and its record still follows its data, so a killed worker leaves every shard either done or not done.
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.runtime import task_run

from diffpir_core.io import DatasetStore, ShardRecord, ShardRef
from diffpir_core.job import Job
from diffpir_core.progress import ShardMeter
from diffpir_core.restore import ShardInputs, restore_batchwise
from tasks import errors
from tasks.errors import describe, is_transient, retry_transient, storage_endpoint
from tasks.measurements import given_data, prepare_measurements, shard_identity
from tasks.metrics import rows_of, scoring_key
from tasks.plan import RunPlan, input_checksum, write_status
from tasks.priors import ModelSlot, get_prior

log = logging.getLogger(__name__)


def _manifest(ref: ShardRef, status: str, started: float, **extra: Any) -> dict[str, Any]:
    return {"shard": ref.key, "images": ref.size, "status": status, "seconds": round(time.perf_counter() - started, 3), **extra}


@dataclass
class Prepared:
    """A shard read and ready for the model (or already done: ``skipped`` holds its manifest)."""

    ref: ShardRef
    started: float
    checksum: str = ""
    identity: dict[str, str] = field(default_factory=dict)
    inputs: ShardInputs | None = None
    skipped: dict[str, Any] | None = None
    prepared: float = 0.0
    threads: int = 0  # torch threads the model restored it with (set by restore_prepared)


def _identity(job: Job, plan: RunPlan, source: DatasetStore, shard: ShardRef) -> tuple[str, dict[str, str], Any]:
    """(input checksum, record identity, restore mode's per-image data) of a shard as its inputs are now."""
    checksum = input_checksum(source, shard)
    given = given_data(job, plan, source, shard)  # restore mode: per-image files checked before any restoration
    return checksum, shard_identity(plan, checksum, given), given


def _skipped_manifest(shard: ShardRef, record: ShardRecord, started: float) -> dict[str, Any]:
    scored = {key: record.metrics[key] for key in ("rows", "scored", "threads") if key in record.metrics}
    return _manifest(shard, "skipped", started, checksum=record.checksum, quarantined=record.quarantined, **scored)


def _skipped(plan: RunPlan, out: DatasetStore, shard: ShardRef, identity: dict[str, str], started: float) -> dict[str, Any] | None:
    if not out.record_matches(shard, plan.restored_array, identity):
        return None
    record = out.read_record(shard, plan.restored_array)
    return None if record is None else _skipped_manifest(shard, record, started)


def skipped_manifests(job: Job, plan: RunPlan, source: DatasetStore, out: DatasetStore, shards: list[ShardRef]) -> dict[str, dict[str, Any]]:
    """``skipped`` manifests of those ``shards`` whose records match the plan, checked in bulk (id and hash columns
    read once per size group, records and data by a few threads; never the prior). A shard whose check fails (a
    per-image file that cannot be read) is simply not done here: its work unit meets the error and reports it."""
    started = time.perf_counter()
    digests = source.rows_digests(shards)
    identities = {}
    for ref in shards:
        if ref.key in digests:
            try:
                identities[ref.key] = shard_identity(plan, digests[ref.key], given_data(job, plan, source, ref))
            except Exception:
                continue
    candidates = [ref for ref in shards if ref.key in identities]
    records = out.done_records(candidates, plan.restored_array, identities)
    return {ref.key: _skipped_manifest(ref, records[ref.key], started) for ref in candidates if ref.key in records}


def prepare_shard(job: Job, plan: RunPlan, source: DatasetStore, out: DatasetStore, shard: ShardRef) -> Prepared:
    """Step 1 and 2: the skip check, then the shard's sampler inputs (evaluate mode: measurements stored first)."""
    started = time.perf_counter()
    checksum, identity, given = _identity(job, plan, source, shard)
    if (manifest := _skipped(plan, out, shard, identity, started)) is not None:
        return Prepared(shard, started, skipped=manifest)
    inputs = prepare_measurements(job, plan, source, out, shard, checksum, given)
    for image_id, reason in inputs.quarantined.items():
        log.warning("shard %s: quarantined %s: %s", shard.key, image_id, reason)
    return Prepared(shard, started, checksum, identity, inputs, prepared=time.perf_counter())


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger (its lines reach the run's page), or this module's outside a task run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def restore_prepared(job: Job, plan: RunPlan, item: Prepared) -> tuple[np.ndarray, dict[str, float], int]:
    """Step 3a: the model restores the shard (the prior is loaded once per process). Returns (pixels, timings, batch);
    the torch threads it ran with go into ``item.threads``."""
    loading = time.perf_counter()
    prior = get_prior(job.prior, plan.model_sha256, plan.device)  # applies the process's threads in this thread
    item.threads = torch.get_num_threads()
    config = job.sampler_config()
    sample_start = time.perf_counter()
    assert item.inputs is not None
    meter = ShardMeter(item.ref.key, [item.inputs.ids[k] for k in item.inputs.kept()], config.nfes, _run_logger())
    restored, batch_size = restore_batchwise(
        prior.unet, item.inputs, job.task, config, seed=job.seed, batch_size=job.batch_size, device=plan.device,
        precision=job.precision, fit=job.fit(), method=job.method, meter=meter,
    )
    timings = {"prepare": item.prepared - item.started, "load_prior": sample_start - loading, "sample": time.perf_counter() - sample_start}
    return np.ascontiguousarray(restored), timings, batch_size


def write_restored(
    job: Job, plan: RunPlan, source: DatasetStore, out: DatasetStore, item: Prepared, restored: np.ndarray,
    timings: dict[str, float], batch_size: int, attempt: int,
) -> dict[str, Any]:
    """Step 3b: the whole shard, its metric rows, then its record (never before the data); returns its ``restored``
    manifest. Rows that cannot be computed here are left to the metrics phase, which reports why."""
    assert item.inputs is not None
    writing = time.perf_counter()
    written = out.write_shard_output(item.ref, plan.restored_array, restored)
    timings = {**timings, "write": time.perf_counter() - writing}
    scored: dict[str, Any] = {}
    try:
        scored = {"rows": rows_of(job, plan, source, item.ref, item.inputs, restored, timings["sample"]), "scored": scoring_key(job)}
    except Exception as err:
        log.warning("shard %s: metrics left to the metrics phase: %s", item.ref.key, describe(err))
    out.write_record(
        item.ref, plan.restored_array, checksum=written, identity=item.identity, timings=timings,
        metrics={"attempts": attempt, "batch_size": batch_size, "threads": item.threads, "quarantined": item.inputs.quarantined, **scored},
    )
    return _manifest(
        item.ref, "restored", item.started, checksum=written, attempts=attempt, batch_size=batch_size, threads=item.threads,
        sample_seconds=round(timings["sample"], 3), quarantined=item.inputs.quarantined, **scored,
    )


_DONE = object()


class ShardPipeline:
    """Read ahead one shard and write behind one shard while the calling thread runs the model.

    ``run(shards)`` returns ``{key: manifest}`` and ``{key: exception}`` for one pass over ``shards``; each stage
    handles one shard at a time, in order, so a shard's data and record are written by the writer thread alone.
    """

    def __init__(
        self, job: Job, plan: RunPlan, attempts: dict[str, int], on_error: Callable[[ShardRef, BaseException], BaseException]
    ):
        self.job, self.plan, self.attempts, self.on_error = job, plan, attempts, on_error
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
                    errors.BREAKER.check(*self.breaker)  # a shard is not even read once its endpoint is plainly down
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
                    errors.BREAKER.succeeded(*self.breaker)
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
                    restored, timings, batch_size = restore_prepared(self.job, self.plan, item)
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


def breaker_key(job: Job, plan: RunPlan) -> tuple[str, str | None]:
    """(run, storage endpoint) under which the storage breaker counts this run's connection failures."""
    return f"{plan.job_hash}@{plan.planned_at}", storage_endpoint([plan.input_store, plan.output_store], job.storage_options)


def restore_unit_fn(job: Job, plan: RunPlan, shards: list[ShardRef], first_attempt: int = 1) -> dict[str, Any]:
    """Restore the shards of one work unit (plain function; the task wraps it): ``{"manifests", "failed"}``.

    Shards that failed with a transient error go through the pipeline again after the job's retry delay (doubling,
    20 % jitter) until ``job.retries`` retries are spent; every failed attempt writes the shard's status file."""
    attempts = {ref.key: first_attempt for ref in shards}
    run, endpoint = breaker_key(job, plan)

    def on_error(ref: ShardRef, err: BaseException) -> BaseException:
        if is_transient(err) and attempts[ref.key] - first_attempt < job.retries:  # a final failure is logged once, by the unit
            log.warning("shard %s attempt %d failed, to be retried: %s", ref.key, attempts[ref.key], describe(err))
        # module attribute, not a name imported here: Dask pickles this task by value, and the breaker (a lock) cannot travel
        if unreachable := errors.BREAKER.failed(run, endpoint, ref.key, err):
            return unreachable  # permanent: no more retries, and no status write to a dead endpoint
        if not isinstance(err, errors.EndpointUnreachable):
            _write_failed_status(plan, ref, job, attempts[ref.key], err)
        return err

    pipeline = ShardPipeline(job, plan, attempts, on_error)
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


def _write_failed_status(plan: RunPlan, ref: ShardRef, job: Job, attempt: int, err: BaseException) -> None:
    try:
        write_status(plan, ref, job.storage_options, state="failed", attempts=attempt, error=describe(err))
    except Exception as status_err:  # the store may be what is failing; the flow still reports the shard.
        log.warning("could not write the status of shard %s: %s", ref.key, status_err)


def unit_name(shards: list[ShardRef]) -> str:
    """``restore-64x64/000003`` for one shard, ``restore-64x64/000000..000015`` for a unit of several."""
    first, last = shards[0].key, shards[-1].key
    return f"restore-{first}" if first == last else f"restore-{first}..{last.rsplit('/', 1)[-1]}"


def _unit_run_name() -> str:
    return unit_name(task_run.parameters["shards"])


@task(
    name="restore-unit",
    task_run_name=_unit_run_name,
    tags=["diffpir-restore"],  # `prefect concurrency-limit create diffpir-restore N` caps units in flight
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def restore_unit(job: Job, plan: RunPlan, shards: list[ShardRef]) -> dict[str, Any]:
    """Prefect task: :func:`restore_unit_fn`; a Prefect retry of the unit (a crashed worker) counts on from its run count."""
    result = restore_unit_fn(job, plan, shards, first_attempt=task_run.run_count or 1)
    for key, reason in result["failed"].items():
        get_run_logger().warning("shard %s failed: %s", key, reason)
    return result
