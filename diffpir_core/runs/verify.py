"""``diffpir verify OUTPUT``: read every done shard of every job in an output and check its data against the
checksum in its record: the restored shards (done as :mod:`diffpir_core.runs.done` decides; with posterior samples
also their std and samples, whose damage makes the shard not done) and the stored
measurements (a job's own, and a comparison's shared store, each shard once).

A shard whose data differs or cannot be read is damaged (changed behind the store's back: disk or copy corruption,
a hand edit). ``diffpir status`` does not see that (it lists records, it reads no data); the reads a result depends
on (scoring, the report, ``diffpir export``, a new variant's measurements) and this command do. With ``forget`` the
damaged shards' records are removed, so running the job again restores (or re-synthesises) exactly those.
"""

from dataclasses import dataclass, field
from typing import Any

from diffpir_core.io import DamagedShard, DatasetStore, ShardRecord, ShardRef
from diffpir_core.io.uris import redact_uri
from diffpir_core.runs.done import job_identities, uncertainty_records
from diffpir_core.runs.plan import JobPlan, read_plans


@dataclass
class Verified:
    """What :func:`verify_output` checked: shard counts, and one entry per damaged shard."""

    checked: int = 0
    jobs: int = 0
    damaged: list[dict[str, str]] = field(default_factory=list)


def verify_output(output: str, storage_options: dict[str, Any] | None = None, *, forget: bool = True) -> Verified:
    """Check every done shard of every job in ``output`` (see the module docstring); ``forget``: remove the records
    of damaged shards (the store must be writable)."""
    options = dict(storage_options or {})
    plans = read_plans(output, options)
    if not plans:
        raise FileNotFoundError(f"{output} holds no diffpir job (no jobs/*/run.json); run a job into it first")
    result = Verified(jobs=len(plans))
    seen: set[tuple[str, str, str]] = set()
    for plan in plans:
        out = DatasetStore.open(plan.output_store, options, writable=forget)
        identities = job_identities(plan, options)
        refs = out.shards()
        done = out.done_records(refs, plan.restored_array, identities)
        for ref in refs:
            if ref.key in done:
                record = out.read_record(ref, plan.restored_array, identities[ref.key])
                _check(result, plan, out, ref, plan.restored_array, record, forget)
                for name, identity in uncertainty_records(plan, identities[ref.key]):
                    if _check(result, plan, out, ref, name, out.read_record(ref, name, identity), forget) and forget:
                        out.delete_record(ref, plan.restored_array)  # not done: the re-run restores what is damaged
        if plan.measurement_prefix is not None:
            _check_measurements(result, plan, options, forget, seen)
    return result


def _check_measurements(
    result: Verified, plan: JobPlan, options: dict[str, Any], forget: bool, seen: set[tuple[str, str, str]]
) -> None:
    """Every recorded shard of the job's measurement arrays (its own store's, or the comparison's shared one)."""
    store = DatasetStore.open(plan.measurements, options, writable=forget)
    for ref in store.shards():
        for name in store.array_names(ref.group):
            if not name.startswith(f"{plan.measurement_prefix}/") or (store.uri, name, ref.key) in seen:
                continue
            seen.add((store.uri, name, ref.key))
            if (record := store.read_record(ref, name)) is not None:
                _check(result, plan, store, ref, name, record, forget)


def _check(
    result: Verified,
    plan: JobPlan,
    store: DatasetStore,
    ref: ShardRef,
    name: str,
    record: ShardRecord | None,
    forget: bool,
) -> bool:
    """Check one recorded shard of array ``name`` (none: nothing to check); True when it is damaged."""
    if record is None:
        return False
    result.checked += 1
    try:
        store.read_verified(ref, name, record)
    except DamagedShard as err:
        if forget:
            store.delete_record(ref, name)
        result.damaged.append(
            {
                "job": plan.job_hash[:16],
                "title": plan.title,
                "store": redact_uri(store.uri),
                "array": name,
                "shard": ref.key,
                "error": str(err),
            }
        )
        return True
    return False
