"""Get a job's stores ready: claim the output and ingest the input (if needed), then plan the job.

Both are idempotent: the output's ingest of the input is refreshed in place (exactly the new, changed, removed and
damaged images are re-ingested; unchanged ones keep their rows), the job's store is re-aligned with it (shards whose
rows did not change stay done), and arrays that exist are left as they are.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from diffpir_core.io import DatasetStore, IngestSummary, StoreError, ingest, refresh
from diffpir_core.io.outputs import claim_output, output_lock
from diffpir_core.io.uris import filesystem, join, redact_uri
from diffpir_core.runs.done import STD_ARRAY, sample_array
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import (
    CODE_VERSION,
    JobPlan,
    input_location,
    job_folder,
    measurement_hash,
    read_text,
    shared_measurement_location,
    write_text,
)
from diffpir_core.runs.priors import prior_sha256, resolve_device
from diffpir_core.runs.threads import planned_threads
from diffpir_core.runs.uncertainty import STD_DTYPE, check_calibration


def input_is_store(job: Job) -> bool:
    """True when ``job.input`` already is a Zarr store (``*.zarr`` or a folder with a root ``zarr.json``)."""
    if job.input.rstrip("/").endswith(".zarr"):
        return True
    fs, base = filesystem(job.input, job.storage_options)
    return fs.exists(join(base, "zarr.json"))


def _ingested(job: Job, uri: str) -> IngestSummary:
    """The output's ingest of ``job.input`` at ``uri``: refreshed when a complete one exists, else made anew."""
    try:
        DatasetStore.open(uri, job.storage_options)
    except StoreError:  # none yet, an interrupted one, or one of an older schema: ingest from scratch
        return ingest(
            job.input,
            uri,
            size_policy=job.ingest.size_policy,
            size=job.ingest.size,
            multiple=job.ingest.multiple,
            shard_size=job.shard_size,
            storage_options=job.storage_options,
            overwrite=True,
        )
    return refresh(job.input, uri, storage_options=job.storage_options)


log = logging.getLogger(__name__)


def ingest_input(
    job: Job, force: bool = False, logger: logging.Logger | logging.LoggerAdapter = log
) -> dict[str, Any]:
    """Claim the output (``force``: also one that is not empty and not diffpir's), then the job's input as a
    dataset store: the input itself when it is one, else the output's ingest of it, brought up to date.
    Returns the store's URI, its image count and (for an ingest) how many images were added, changed, repaired,
    removed or kept."""
    claim_output(job.output, job.input, job.storage_options, force=force)
    if input_is_store(job):
        store = DatasetStore.open(job.input, job.storage_options)
        return {"store": job.input, "images": sum(g.count for g in store.groups()), "changes": None}
    uri = join(job.output, input_location(job))
    with output_lock(job.output, job.storage_options) as waited:  # another job into this output may ingest it now
        if waited:
            logger.info("waited for another job's ingest into %s", redact_uri(job.output))
        summary = _ingested(job, uri)
    logger.info(
        "input store %s: %d image(s) in %d shard(s): %d added, %d changed, %d repaired, %d removed, %d unchanged; "
        "%d quarantined; %.1f s (every source file hashed, every stored image verified)",
        input_location(job),
        summary.ingested,
        summary.shards,
        summary.added,
        summary.changed,
        summary.repaired,
        summary.removed,
        summary.unchanged,
        summary.quarantined,
        summary.seconds,
    )
    if summary.ignored:
        logger.warning("\n".join(summary.ignored_lines()))
    if summary.ingested == 0:
        raise ValueError(
            f"no image could be ingested from {redact_uri(job.input)} ({summary.quarantined} quarantined, "
            f"{summary.ignored} ignored); check the input path and the quarantine list"
        )
    changes = summary.model_dump(include={"added", "changed", "repaired", "removed", "unchanged"})
    return {"store": uri, "images": summary.ingested, "changes": changes}


def _job_store(job: Job, uri: str, source: DatasetStore) -> DatasetStore:
    """The job's own store at ``uri``, aligned with ``source``'s rows (made on the job's shard grid if needed)."""
    try:
        out = DatasetStore.open(uri, job.storage_options, writable=True)
    except StoreError:
        return DatasetStore.create_aligned(uri, source, job.storage_options, shard_size=job.shard_size, overwrite=True)
    out.align_with(source)
    return out


def _recorded_threads(job: Job, folder: str) -> int | None:
    """The threads an earlier run of this job recorded in its ``run.json`` (None: no earlier run, or none recorded)."""
    text = read_text(job.output, f"{folder}/run.json", job.storage_options)
    return None if text is None else JobPlan.from_json(text, job.output).threads


def plan_job(job: Job, input_store: str, shared_measurements: bool = False, variant: str | None = None) -> JobPlan:
    """Resolve device, prior digest and threads (those of the job's first run, see ``planned_threads``), prepare the
    job's store and its arrays, write job.yaml and run.json.
    ``shared_measurements`` (a comparison's variant): evaluate-mode measurements go into the store the task's
    variants share (``diffpir_core.runs.plan.shared_measurement_location``) instead of the job's own;
    ``variant`` is its name."""
    check_calibration(job)
    device = resolve_device(job.device)
    source = DatasetStore.open(input_store, job.storage_options)
    job_hash = job.job_hash()
    folder = job_folder(job_hash)
    out = _job_store(job, join(job.output, f"{folder}/restored.zarr"), source)
    prefix = measurements = None
    if job.mode == "evaluate":
        prefix = f"measurements/{measurement_hash(job.task_identity(), job.seed)[:16]}"
        if shared_measurements:
            measurements = _job_store(job, join(job.output, shared_measurement_location(job, input_store)), source)
    settings = job.sampler_settings()
    plan = JobPlan(
        job_hash=job_hash,
        title=f"{job.task_label()}-{job.dataset_name()}-{job.mode}"
        + ("" if job.method == "diffpir" else f"-{job.method}"),
        model_sha256=prior_sha256(job.prior),
        code_version=CODE_VERSION,
        device=device,
        output=job.output,
        input_store=input_store,
        output_store=out.uri,
        restored_array="restored",
        measurement_prefix=prefix,
        planned_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        measurement_store=None if measurements is None else measurements.uri,
        threads=planned_threads(job.threads, _recorded_threads(job, folder), job.local_tasks()),
        variant=variant,
        task=job.task_label(),
        method=job.method,
        sampler=settings.config.model_dump(mode="json"),
        sampler_sources=settings.sources,
        uncertainty=None if job.uncertainty is None else job.uncertainty.identity(),
    )
    scale = job.output_scale()
    for group in source.groups():
        shape = (group.height * scale, group.width * scale, 3)
        out.create_array(group.name, plan.restored_array, shape, "uint8")
        if job.uncertainty is not None:
            for k in range(job.uncertainty.samples):
                out.create_array(group.name, sample_array(k), shape, "uint8")
            out.create_array(group.name, STD_ARRAY, shape, STD_DTYPE)
        if prefix is not None:
            for name, (shape, dtype) in job.task.measurement_arrays(
                group.height, group.width, job.storage_options
            ).items():
                if all(shape):  # an image smaller than the task's scale has no measurement: its shard says so
                    (measurements or out).create_array(group.name, f"{prefix}/{name}", shape, dtype)
    write_text(job.output, f"{folder}/job.yaml", job.to_yaml(), job.storage_options)
    write_text(job.output, f"{folder}/run.json", plan.to_json(), job.storage_options)
    return plan
