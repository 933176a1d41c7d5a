"""``restore_shard``: the one Prefect task per shard. It writes its outputs itself and returns a small manifest.

Order of work, so that a shard is either done (data + matching record) or simply not done:
1. the record already matches (job hash, model sha256, code version, input checksum, data checksum):
   return a ``skipped`` manifest without loading the prior;
2. evaluate mode: reuse the stored measurements if their record matches, else synthesise and store them;
3. restore in batches with the process-wide prior; write the whole shard; then its record.
Every failed attempt leaves a status file (attempt count, error) for ``diffpir status``; transient
errors are retried by Prefect with backoff, permanent ones fail the shard at once.
"""

import logging
import time
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import Job
from diffpir_core.restore import restore_batchwise
from tasks import errors
from tasks.errors import describe, retry_transient, storage_endpoint
from tasks.measurements import given_data, prepare_measurements, shard_identity
from tasks.plan import RunPlan, input_checksum, write_status
from tasks.priors import get_prior

log = logging.getLogger(__name__)


def _manifest(ref: ShardRef, status: str, started: float, **extra: Any) -> dict[str, Any]:
    return {"shard": ref.key, "images": ref.size, "status": status, "seconds": round(time.perf_counter() - started, 3), **extra}


def restore_shard_fn(job: Job, plan: RunPlan, shard: ShardRef, attempt: int = 1) -> dict[str, Any]:
    """Restore one shard unless its record already matches (plain function; the task wraps it)."""
    started = time.perf_counter()
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options, writable=True)
    checksum = input_checksum(source, shard)
    given = given_data(job, plan, source, shard)  # restore mode: per-image files checked before any restoration
    identity = shard_identity(plan, checksum, given)
    if out.record_matches(shard, plan.restored_array, identity):
        record = out.read_record(shard, plan.restored_array)
        quarantined = record.metrics.get("quarantined", {}) if record else {}
        return _manifest(shard, "skipped", started, checksum=record.checksum if record else None, quarantined=quarantined)
    inputs = prepare_measurements(job, plan, source, out, shard, checksum, given)
    for image_id, reason in inputs.quarantined.items():
        log.warning("shard %s: quarantined %s: %s", shard.key, image_id, reason)
    prepared = time.perf_counter()
    prior = get_prior(job.prior, plan.model_sha256, plan.device)
    config = job.sampler_config()
    sample_start = time.perf_counter()
    restored, batch_size = restore_batchwise(
        prior.unet, inputs, job.task, config,
        seed=job.seed, batch_size=job.batch_size, device=plan.device, precision=job.precision, fit=job.fit(), method=job.method,
    )
    sampled = time.perf_counter()
    written = out.write_shard_output(shard, plan.restored_array, np.ascontiguousarray(restored))
    timings = {
        "prepare": prepared - started,
        "load_prior": sample_start - prepared,
        "sample": sampled - sample_start,
        "write": time.perf_counter() - sampled,
    }
    out.write_record(
        shard, plan.restored_array, checksum=written, identity=identity, timings=timings,
        metrics={"attempts": attempt, "batch_size": batch_size, "quarantined": inputs.quarantined},
    )
    return _manifest(
        shard, "restored", started, checksum=written, attempts=attempt, batch_size=batch_size,
        sample_seconds=round(timings["sample"], 3), quarantined=inputs.quarantined,
    )


def _shard_run_name() -> str:
    return f"restore-{task_run.parameters['shard'].key}"


@task(
    name="restore-shard",
    task_run_name=_shard_run_name,
    tags=["diffpir-restore"],  # `prefect concurrency-limit create diffpir-restore N` caps shards in flight
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def restore_shard(job: Job, plan: RunPlan, shard: ShardRef) -> dict[str, Any]:
    """Prefect task: :func:`restore_shard_fn` with attempt bookkeeping for ``diffpir status``."""
    attempt = task_run.run_count or 1
    run, endpoint = f"{plan.job_hash}@{plan.planned_at}", storage_endpoint([plan.input_store, plan.output_store], job.storage_options)
    # module attribute, not a name imported here: Dask pickles this task by value, and the breaker (a lock) cannot travel
    errors.BREAKER.check(run, endpoint)  # the endpoint plainly is down: not run (no status file: it would not reach it)
    try:
        manifest = restore_shard_fn(job, plan, shard, attempt)
    except Exception as err:
        get_run_logger().warning("shard %s attempt %d failed: %s", shard.key, attempt, describe(err))
        if unreachable := errors.BREAKER.failed(run, endpoint, shard.key, err):
            raise unreachable from err  # permanent: no more retries, and no status write to a dead endpoint
        try:
            write_status(plan, shard, job.storage_options, state="failed", attempts=attempt, error=describe(err))
        except Exception as status_err:  # the store may be what is failing; the flow still reports the shard.
            get_run_logger().warning("could not write the status of shard %s: %s", shard.key, status_err)
        raise
    errors.BREAKER.succeeded(run, endpoint)
    if manifest["status"] == "restored":
        write_status(plan, shard, job.storage_options, state="done", attempts=attempt, error=None)
    return manifest
