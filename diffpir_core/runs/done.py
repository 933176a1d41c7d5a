"""The one done decision: a shard of a job is done when the record its identity names exists.

A shard's identity is the plan's (job hash, prior sha256, code version), the digest of the shard's input rows as
the input store holds them now (ids, source and pixel sha256), and in restore mode the digest of the shard's
per-image kernel, mask or σ files (:func:`shard_identities`). The record's object name derives from it
(:func:`diffpir_core.io.records.record_name`), so :func:`done_shards` only asks whether those objects exist: one
listing per array and size group on object stores, one ``stat`` per shard on a local disk, no record read. The run
(its bulk skip and each shard's own check), ``diffpir status``, the ``score`` flow and ``diffpir export`` all ask it.

Data altered behind the store's back keeps its record; it is caught where it is read (:func:`read_checked`, which
forgets the damaged shard's record so that the next run restores it) and by ``diffpir verify``.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from diffpir_core.io import DamagedShard, DatasetStore, ShardRecord, ShardRef, StoreError
from diffpir_core.io.records import RecordStamp
from diffpir_core.io.uris import redact_uri
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, group_of, job_folder, read_text
from diffpir_core.task_kinds.base import GivenData

log = logging.getLogger(__name__)


@dataclass
class Identities:
    """The identity of every shard whose inputs could be read now (by shard key), and the images restore mode's
    per-image files leave out (by shard key: id -> reason). A shard missing here cannot be done."""

    by_shard: dict[str, dict[str, str]] = field(default_factory=dict)
    quarantined: dict[str, dict[str, str]] = field(default_factory=dict)


def given_data(job: Job, plan: JobPlan, source: DatasetStore, ref: ShardRef) -> GivenData | None:
    """Restore mode: the shard's operator data from the task's files, images without usable data quarantined,
    found from the size group alone (no pixels read); None in evaluate mode."""
    if plan.measurement_prefix is not None:
        return None
    group = group_of(source, ref)
    return job.task.given(list(ref.ids), (ref.size, group.height, group.width), job.storage_options)


def shard_identity(plan: JobPlan, checksum: str, given: GivenData | None) -> dict[str, str]:
    """The identity a shard record carries: the plan's, plus the digest of the shard's per-image files if any."""
    identity = plan.identity(checksum)
    if given is not None and given.identity:
        identity["degradations"] = given.identity
    return identity


def shard_identities(
    job: Job | None, plan: JobPlan, source: DatasetStore | None, refs: Sequence[ShardRef]
) -> Identities:
    """The identities a record of each shard of ``refs`` must have: the input rows' digests from whole columns (one
    read per size group); in restore mode each shard's per-image files are read and digested too. ``job`` None (a
    job file that no longer loads) or ``source`` None (an input store being refreshed or gone): shards whose identity
    needs what is missing are left out (not done)."""
    found = Identities()
    if source is None:
        return found
    digests = source.rows_digests(refs)
    for ref in refs:
        if ref.key not in digests:
            continue
        try:
            given = None if plan.measurement_prefix is not None else given_data(_need(job), plan, source, ref)
        except Exception:  # an unreadable per-image file: the shard is not done; its unit reports why
            continue
        found.by_shard[ref.key] = shard_identity(plan, digests[ref.key], given)
        if given is not None and given.quarantined:
            found.quarantined[ref.key] = dict(given.quarantined)
    return found


def _need(job: Job | None) -> Job:
    if job is None:
        raise ValueError("the job file is needed for restore mode's per-image files")
    return job


def done_shards(
    plan: JobPlan, out: DatasetStore, refs: Sequence[ShardRef], identities: Identities
) -> dict[str, RecordStamp]:
    """The shards of ``refs`` that are done: those whose record for their identity exists, with when it was written."""
    return out.done_records(refs, plan.restored_array, identities.by_shard)


SAMPLES_PREFIX = "samples"
STD_ARRAY = "std"


def sample_array(k: int) -> str:
    """The array of posterior sample ``k`` of a job with ``uncertainty``: ``samples/<k>``."""
    return f"{SAMPLES_PREFIX}/{k}"


def sample_identity(identity: dict[str, str], k: int) -> dict[str, str]:
    """The record identity of posterior sample ``k`` of a shard: the shard's, without the sample count and estimate
    (a sample does not depend on them: a job that raises K keeps the samples it has), plus ``k``."""
    return {**{key: value for key, value in identity.items() if key != "uncertainty"}, "sample": str(k)}


def done_samples(out: DatasetStore, ref: ShardRef, identity: dict[str, str], count: int) -> list[int]:
    """The posterior samples ``k < count`` of shard ``ref`` whose record for :func:`sample_identity` exists."""
    return [k for k in range(count) if out.record_matches(ref, sample_array(k), sample_identity(identity, k))]


def uncertainty_records(plan: JobPlan, identity: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """(array, record identity) of what a done shard of a job with posterior samples holds besides ``restored``: its
    ``std`` and each sample (none for a plain job)."""
    if plan.uncertainty is None:
        return []
    samples = [(sample_array(k), sample_identity(identity, k)) for k in range(plan.samples)]
    return [(STD_ARRAY, identity), *samples]


def find_done(
    job: Job | None, plan: JobPlan, source: DatasetStore | None, out: DatasetStore, refs: Sequence[ShardRef]
) -> dict[str, RecordStamp]:
    """:func:`done_shards` with the identities of :func:`shard_identities`."""
    return done_shards(plan, out, refs, shard_identities(job, plan, source, refs))


def planned_job(plan: JobPlan, storage_options: dict[str, Any]) -> Job | None:
    """The job as its ``job.yaml`` in the job's folder holds it, with ``storage_options`` (the file's are redacted),
    for restore mode's per-image files; None in evaluate mode (not needed) or when the file does not load."""
    if plan.measurement_prefix is not None:
        return None
    text = read_text(plan.output, f"{job_folder(plan.job_hash)}/job.yaml", storage_options)
    try:
        return Job.model_validate({**yaml.safe_load(text or ""), "storage_options": storage_options})
    except Exception as err:  # edited or unreadable: restore-mode shards cannot be checked, so none is done
        log.warning("%s: the job file does not load (%s); its shards count as not done", plan.job_dir, err)
        return None


def job_identities(plan: JobPlan, storage_options: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The record identity of every shard of a planned job whose inputs can be read now (for ``diffpir export`` and
    ``diffpir verify``: a shard is done when the record it names exists)."""
    refs = DatasetStore.open(plan.output_store, storage_options).shards()
    return shard_identities(planned_job(plan, storage_options), plan, open_input(plan, storage_options), refs).by_shard


def open_input(plan: JobPlan, storage_options: dict[str, Any]) -> DatasetStore | None:
    """The job's input store; None while it is being refreshed, or when it is gone (then no shard counts as done)."""
    try:
        return DatasetStore.open(plan.input_store, storage_options)
    except StoreError:
        return None


def read_checked(
    store: DatasetStore, ref: ShardRef, name: str, record: ShardRecord | None = None
) -> tuple[np.ndarray, ShardRecord]:
    """The shard's data of array ``name`` and its record, verified against the record's checksum. Damaged data (see
    :class:`DamagedShard`) is an error naming the shard; its records are removed first when the store can be written,
    so that running the job again restores the shard (else the message says how)."""
    try:
        return store.read_verified(ref, name, record)
    except DamagedShard as err:
        raise DamagedShard(f"{err}; {forget(store, ref, name)}", err.shard, err.array) from None


def forget(store: DatasetStore, ref: ShardRef, name: str) -> str:
    """Remove every record of shard ``ref`` of ``name`` (opening ``store`` writable if needed); returns what the user
    does next."""
    try:
        writable = DatasetStore.open(store.uri, store.storage_options, writable=True)
        writable.delete_record(ref, name)
    except (OSError, StoreError) as err:
        log.warning("could not remove the record of damaged shard %s of %s: %s", ref.key, redact_uri(store.uri), err)
        return "run `diffpir verify OUTPUT` where the output is writable, then run the job again to restore it"
    return "its record was removed: run the job again to restore it"
