"""``restore_shard``: the one Prefect task per shard. It writes its outputs itself and returns a small manifest.

Order of work, so that a shard is either done (data + matching record) or simply not done:
1. the record already matches (job hash, model sha256, code version, input checksum, data checksum):
   return a ``skipped`` manifest without loading the prior;
2. evaluate mode: reuse the stored measurements if their record matches, else synthesise and store them;
3. restore in batches with the process-wide prior; write the whole shard; then its record.
Every failed attempt leaves a status file (attempt count, error) for ``diffpir status``; transient
errors are retried by Prefect with backoff, permanent ones fail the shard at once.
"""

import time
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import Job, SRTask
from tasks.degradation import inputs_as_given, inputs_from_arrays, measurement_paths, synthesise
from tasks.errors import describe, retry_transient
from tasks.plan import RunPlan, group_of, input_checksum, write_status
from tasks.priors import get_prior
from tasks.restoration import ShardInputs, restore_batchwise


def _measurements(job: Job, plan: RunPlan, source: DatasetStore, out: DatasetStore, ref: ShardRef, checksum: str) -> ShardInputs:
    """Evaluate mode: the shard's stored measurements, synthesised and recorded first if missing."""
    group = group_of(source, ref)
    arrays = measurement_paths(job, str(plan.measurement_prefix), group.height, group.width)
    identity = {"measurement": str(plan.measurement_prefix), "input": checksum, "code_version": plan.code_version}
    if all(out.record_matches(ref, path, identity) for path in arrays.values()):
        data = {name: out.read_array(ref, path) for name, path in arrays.items()}
    else:
        data = synthesise(job, list(ref.ids), source.read_images(ref))
        for name, path in arrays.items():
            written = out.write_shard_output(ref, path, data[name])
            out.write_record(ref, path, checksum=written, identity=identity)
    return inputs_from_arrays(list(ref.ids), data)


def _manifest(ref: ShardRef, status: str, started: float, **extra: Any) -> dict[str, Any]:
    return {"shard": ref.key, "images": ref.size, "status": status, "seconds": round(time.perf_counter() - started, 3), **extra}


def restore_shard_fn(job: Job, plan: RunPlan, shard: ShardRef, attempt: int = 1) -> dict[str, Any]:
    """Restore one shard unless its record already matches (plain function; the task wraps it)."""
    started = time.perf_counter()
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options, writable=True)
    checksum = input_checksum(source, shard)
    identity = plan.identity(checksum)
    if out.record_matches(shard, plan.restored_array, identity):
        record = out.read_record(shard, plan.restored_array)
        return _manifest(shard, "skipped", started, checksum=record.checksum if record else None)
    if plan.measurement_prefix is not None:
        inputs = _measurements(job, plan, source, out, shard, checksum)
    else:
        inputs = inputs_as_given(job, list(shard.ids), source.read_images(shard))
    prepared = time.perf_counter()
    prior = get_prior(job.prior, plan.model_sha256, plan.device)
    config = job.sampler_config()
    scale = job.task.scale if isinstance(job.task, SRTask) else 1
    sample_start = time.perf_counter()
    restored, batch_size = restore_batchwise(
        prior.unet, inputs, job.task.kind, config,
        seed=job.seed, batch_size=job.batch_size, device=plan.device, precision=job.precision, scale=scale,
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
        metrics={"attempts": attempt, "batch_size": batch_size},
    )
    return _manifest(
        shard, "restored", started, checksum=written, attempts=attempt, batch_size=batch_size,
        sample_seconds=round(timings["sample"], 3),
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
    try:
        manifest = restore_shard_fn(job, plan, shard, attempt)
    except Exception as err:
        get_run_logger().warning("shard %s attempt %d failed: %s", shard.key, attempt, describe(err))
        try:
            write_status(plan, shard, job.storage_options, state="failed", attempts=attempt, error=describe(err))
        except Exception as status_err:  # the store may be what is failing; the flow still reports the shard.
            get_run_logger().warning("could not write the status of shard %s: %s", shard.key, status_err)
        raise
    if manifest["status"] == "restored":
        write_status(plan, shard, job.storage_options, state="done", attempts=attempt, error=None)
    return manifest
