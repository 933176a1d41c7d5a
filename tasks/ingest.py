"""Prefect tasks that get a job's stores ready: ingest the input (if needed) and plan the output.

Both are idempotent: an input store that is complete and was made with the job's ingest options is
reused, an output store aligned with the input is reused, and arrays that exist are left as they are.
"""

from typing import Any

from prefect import get_run_logger, task

from diffpir_core.io import DatasetStore, StoreError, ingest
from diffpir_core.io.uris import filesystem, join, redact_uri
from diffpir_core.job import Job
from tasks.errors import retry_transient
from tasks.plan import CODE_VERSION, RunPlan, measurement_hash, write_text
from tasks.priors import prior_sha256, resolve_device


def input_is_store(job: Job) -> bool:
    """True when ``job.input`` already is a Zarr store (``*.zarr`` or a folder with a root ``zarr.json``)."""
    if job.input.rstrip("/").endswith(".zarr"):
        return True
    fs, base = filesystem(job.input, job.storage_options)
    return fs.exists(join(base, "zarr.json"))


def _reusable(uri: str, job: Job) -> bool:
    try:
        info = DatasetStore.open(uri, job.storage_options).info
    except StoreError:
        return False
    wanted = {
        "source": redact_uri(job.input),
        "size_policy": job.ingest.size_policy,
        "size": job.ingest.size,
        "multiple": job.ingest.multiple,
        "shard_size": job.shard_size,
    }
    return all(info.get(key) == value for key, value in wanted.items())


@task(name="ingest", retry_condition_fn=retry_transient)
def ingest_input(job: Job) -> dict[str, Any]:
    """The job's input as a dataset store: the input itself, a reusable earlier ingest, or a new ingest."""
    logger = get_run_logger()
    if input_is_store(job):
        store = DatasetStore.open(job.input, job.storage_options)
        return {"store": job.input, "ingested": False, "images": sum(g.count for g in store.groups())}
    uri = join(job.output, "input.zarr")
    if _reusable(uri, job):
        logger.info("reusing the input store %s (same source and ingest options)", redact_uri(uri))
        store = DatasetStore.open(uri, job.storage_options)
        return {"store": uri, "ingested": False, "images": sum(g.count for g in store.groups())}
    summary = ingest(
        job.input,
        uri,
        size_policy=job.ingest.size_policy,
        size=job.ingest.size,
        multiple=job.ingest.multiple,
        shard_size=job.shard_size,
        storage_options=job.storage_options,
        overwrite=True,
    )
    logger.info(
        "ingested %d image(s) into %d shard(s), %d quarantined, in %.1f s",
        summary.ingested, summary.shards, summary.quarantined, summary.seconds,
    )
    if summary.ingested == 0:
        raise ValueError(
            f"no image could be ingested from {redact_uri(job.input)} ({summary.quarantined} quarantined, "
            f"{summary.ignored} ignored); check the input path and the quarantine list"
        )
    return {"store": uri, "ingested": True, "images": summary.ingested}


def _aligned_output(job: Job, source: DatasetStore) -> DatasetStore:
    uri = join(job.output, "restored.zarr")
    try:
        out = DatasetStore.open(uri, job.storage_options, writable=True)
        same_grid = out.shard_size == source.shard_size and [
            (g.name, g.count) for g in out.groups()
        ] == [(g.name, g.count) for g in source.groups()]
        if same_grid and out.info.get("aligned_with") == redact_uri(source.uri):
            return out
    except StoreError:
        pass
    return DatasetStore.create_aligned(uri, source, job.storage_options, overwrite=True)


@task(name="plan-run", retry_condition_fn=retry_transient)
def plan_run(job: Job, input_store: str) -> RunPlan:
    """Resolve device and prior digest, prepare the output store and its arrays, write job.yaml and run.json."""
    device = resolve_device(job.device)
    source = DatasetStore.open(input_store, job.storage_options)
    out = _aligned_output(job, source)
    job_hash = job.job_hash()
    prefix = None
    if job.mode == "evaluate":
        prefix = f"measurements/{measurement_hash(job.task.model_dump(mode='json'), job.seed)[:16]}"
    plan = RunPlan(
        job_hash=job_hash,
        model_sha256=prior_sha256(job.prior),
        code_version=CODE_VERSION,
        device=device,
        output=job.output,
        input_store=input_store,
        output_store=out.uri,
        restored_array=f"runs/{job_hash[:16]}/restored",
        measurement_prefix=prefix,
    )
    scale = job.output_scale()
    for group in source.groups():
        out.create_array(group.name, plan.restored_array, (group.height * scale, group.width * scale, 3), "uint8")
        if prefix is not None:
            for name, (shape, dtype) in job.task.measurement_arrays(group.height, group.width, job.storage_options).items():
                out.create_array(group.name, f"{prefix}/{name}", shape, dtype)
    write_text(job.output, "job.yaml", job.to_yaml(), job.storage_options)
    write_text(job.output, "run.json", plan.model_dump_json(indent=1), job.storage_options)
    return plan
