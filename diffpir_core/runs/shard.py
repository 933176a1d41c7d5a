"""One shard's steps: prepare (the done check, the sampler inputs), restore, write (data, then record), score.

Order of work per shard, so that a shard is either done (data, then the record its identity names) or simply not
done:
1. the record its identity names exists (:mod:`diffpir_core.runs.done`): a ``skipped`` manifest from that record,
   without loading the prior;
2. evaluate mode: reuse the stored measurements if their record matches, else synthesise and store them;
3. restore in batches with the process-wide prior; write the whole shard; score it (the metric rows go into the
   record, so the metrics phase and re-runs need not read the shard again); then its record.

A work unit (:mod:`diffpir_core.runs.unit`) runs these steps as a pipeline over its shards. Each shard has one
writer, and its record follows its data, so a killed worker leaves every shard either done or not done.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffpir_core.io import DatasetStore, ShardRecord, ShardRef
from diffpir_core.runs.batches import ShardInputs, restore_batchwise
from diffpir_core.runs.done import Identities, done_shards, given_data, shard_identities, shard_identity
from diffpir_core.runs.failures import describe
from diffpir_core.runs.job import Job
from diffpir_core.runs.measurements import prepare_measurements
from diffpir_core.runs.plan import JobPlan
from diffpir_core.runs.priors import get_prior
from diffpir_core.runs.probes import divergences, restorations_per_image
from diffpir_core.runs.progress import ShardMeter
from diffpir_core.runs.scoring import rows_of, scoring_key

log = logging.getLogger(__name__)


def _manifest(ref: ShardRef, status: str, started: float, **extra: Any) -> dict[str, Any]:
    return {
        "shard": ref.key,
        "images": ref.size,
        "status": status,
        "seconds": round(time.perf_counter() - started, 3),
        **extra,
    }


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
    divergence: dict[str, float] = field(default_factory=dict)  # SURE's probe's, by image id (``sure`` asked for)


def _identity(job: Job, plan: JobPlan, source: DatasetStore, shard: ShardRef) -> tuple[str, dict[str, str], Any]:
    """(input rows digest, record identity, restore mode's per-image data) of a shard as its inputs are now."""
    checksum = source.rows_digest(shard)
    given = given_data(job, plan, source, shard)  # restore mode: per-image files checked before any restoration
    return checksum, shard_identity(plan, checksum, given), given


def _skipped_manifest(shard: ShardRef, record: ShardRecord, started: float) -> dict[str, Any]:
    scored = {key: record.metrics[key] for key in ("rows", "scored", "threads") if key in record.metrics}
    return _manifest(shard, "skipped", started, checksum=record.checksum, quarantined=record.quarantined, **scored)


def _manifests(
    plan: JobPlan, out: DatasetStore, refs: list[ShardRef], identities: Identities, started: float, threads: int = 16
) -> dict[str, dict[str, Any]]:
    """``skipped`` manifests of the done shards of ``refs`` (:func:`done_shards`), from their records (read by
    ``threads`` threads: the metric rows they keep spare a re-run the scoring)."""
    found = done_shards(plan, out, refs, identities)
    done = [ref for ref in refs if ref.key in found]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="record-read") as pool:
        records = pool.map(lambda ref: out.read_record(ref, plan.restored_array, identities.by_shard[ref.key]), done)
        return {
            ref.key: _skipped_manifest(ref, record, started)
            for ref, record in zip(done, records, strict=True)
            if record is not None
        }


def skipped_manifests(
    job: Job, plan: JobPlan, source: DatasetStore, out: DatasetStore, shards: list[ShardRef]
) -> dict[str, dict[str, Any]]:
    """``skipped`` manifests of those ``shards`` that are done, checked in bulk (id and hash columns read once per
    size group, one listing or a stat per shard; never the prior). A shard whose check fails (a per-image file that
    cannot be read) is simply not done here: its work unit meets the error and reports it."""
    started = time.perf_counter()
    return _manifests(plan, out, shards, shard_identities(job, plan, source, shards), started)


def prepare_shard(job: Job, plan: JobPlan, source: DatasetStore, out: DatasetStore, shard: ShardRef) -> Prepared:
    """Step 1 and 2: the skip check, then the shard's sampler inputs (evaluate mode: measurements stored first)."""
    started = time.perf_counter()
    checksum, identity, given = _identity(job, plan, source, shard)
    if found := _manifests(plan, out, [shard], Identities({shard.key: identity}), started):
        return Prepared(shard, started, skipped=found[shard.key])
    inputs = prepare_measurements(job, plan, source, out, shard, checksum, given)
    for image_id, reason in inputs.quarantined.items():
        log.warning("shard %s: quarantined %s: %s", shard.key, image_id, reason)
    return Prepared(shard, started, checksum, identity, inputs, prepared=time.perf_counter())


def restore_prepared(
    job: Job, plan: JobPlan, item: Prepared, logger: logging.Logger | logging.LoggerAdapter = log
) -> tuple[np.ndarray, dict[str, float], int]:
    """Step 3a: the model restores the shard (the prior is loaded once per process). Returns (pixels, timings, batch);
    the torch threads it ran with go into ``item.threads``; ``logger`` gets a line per finished image."""
    loading = time.perf_counter()
    prior = get_prior(job.prior, plan.model_sha256, plan.device)  # applies the process's threads in this thread
    item.threads = torch.get_num_threads()
    config = plan.sampler_settings().config
    sample_start = time.perf_counter()
    assert item.inputs is not None
    meter = ShardMeter(item.ref.key, [item.inputs.ids[k] for k in item.inputs.kept()], config.nfes, logger)
    restored, batch_size = restore_batchwise(
        prior.unet,
        item.inputs,
        job.task,
        config,
        seed=job.seed,
        batch_size=job.batch_size,
        device=plan.device,
        precision=job.precision,
        fit=job.fit(),
        method=job.method,
        meter=meter,
    )
    timings = {
        "prepare": item.prepared - item.started,
        "load_prior": sample_start - loading,
        "sample": time.perf_counter() - sample_start,
    }
    if restorations_per_image(job) > 1:  # SURE's probe: a second restoration of every image
        probing = time.perf_counter()
        item.divergence = divergences(
            job, prior.unet, item.inputs, restored, config, batch_size=batch_size, device=plan.device
        )
        timings["sure_probe"] = time.perf_counter() - probing
    return np.ascontiguousarray(restored), timings, batch_size


def write_restored(
    job: Job,
    plan: JobPlan,
    source: DatasetStore,
    out: DatasetStore,
    item: Prepared,
    restored: np.ndarray,
    timings: dict[str, float],
    batch_size: int,
    attempt: int,
) -> dict[str, Any]:
    """Step 3b: the whole shard, its metric rows, then its record (never before the data); returns its ``restored``
    manifest. Rows that cannot be computed here are left to the metrics phase, which reports why."""
    assert item.inputs is not None
    writing = time.perf_counter()
    written = out.write_shard_output(item.ref, plan.restored_array, restored)
    timings = {**timings, "write": time.perf_counter() - writing}
    scored: dict[str, Any] = {}
    try:
        scored = {
            "rows": rows_of(job, plan, source, item.ref, item.inputs, restored, timings["sample"], item.divergence),
            "scored": scoring_key(job),
        }
    except Exception as err:
        log.warning("shard %s: metrics left to the metrics phase: %s", item.ref.key, describe(err))
    out.write_record(
        item.ref,
        plan.restored_array,
        checksum=written,
        identity=item.identity,
        timings=timings,
        metrics={
            "attempts": attempt,
            "batch_size": batch_size,
            "threads": item.threads,
            "quarantined": item.inputs.quarantined,
            **({"divergence": item.divergence} if item.divergence else {}),
            **scored,
        },
    )
    return _manifest(
        item.ref,
        "restored",
        item.started,
        checksum=written,
        attempts=attempt,
        batch_size=batch_size,
        threads=item.threads,
        sample_seconds=round(timings["sample"], 3),
        quarantined=item.inputs.quarantined,
        **scored,
    )


def already_done(job: Job, plan: JobPlan, refs: list[ShardRef]) -> dict[str, dict[str, Any]]:
    """``skipped`` manifests of the shards of ``refs`` that are done, checked in bulk (no prior): a finished job
    re-runs in seconds per thousand shards. A store that cannot be opened now counts nothing as done: the units
    find out, shard by shard, with retries and the breaker."""
    try:
        source = DatasetStore.open(plan.input_store, job.storage_options)
        out = DatasetStore.open(plan.output_store, job.storage_options)
    except Exception:
        return {}
    try:
        return skipped_manifests(job, plan, source, out, refs)
    except Exception:
        return {}


def done_manifests(job: Job, plan: JobPlan, refs: list[ShardRef]) -> dict[str, dict[str, Any]]:
    """Manifests (status ``done``) of the shards of ``refs`` that are done: what the ``score`` flow scores."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    found = skipped_manifests(job, plan, source, out, refs)
    return {key: {**m, "status": "done"} for key, m in found.items()}
