"""``diffpir status OUTPUT``: the jobs an output holds, and for each its shards done / failed (with reason) /
pending, read from the output alone (wherever it was copied or moved to: its locations are relative).

Done means what the run means by it (:mod:`diffpir_core.runs.done`): the record named by the shard's identity (the
job, the ids and contents of its input rows as the input store holds them now, restore mode's per-image files)
exists; its time is the record's, from the listing, and attempts come from the status files: no record is read.
Failed means a status file says the last attempt failed and the shard is not done. A job whose input or per-image
files changed since it ran shows the changed shards as pending: running it again restores exactly those. Data
altered behind the store's back is not seen here; ``diffpir verify`` finds it.

Quarantined images are those the ingest could not read (the input store's list) and those a done shard did not
restore (restore mode: a missing, unreadable or wrong-size kernel or mask file, a bad σ cell).
"""

from typing import Any

from diffpir_core.io import DatasetStore
from diffpir_core.runs.done import done_shards, open_input, planned_job, shard_identities
from diffpir_core.runs.plan import JobPlan, quarantined_images, read_plans, read_statuses


def output_status(output: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"output": ..., "jobs": [...]}``: the :func:`job_status` of every job in ``output``, the last planned
    first."""
    options = dict(storage_options or {})
    plans = read_plans(output, options)
    if not plans:
        raise FileNotFoundError(f"{output} holds no diffpir job (no jobs/*/run.json); run a job into it first")
    return {"output": output, "jobs": [_plan_status(plan, options) for plan in plans]}


def job_status(output: str, storage_options: dict[str, Any] | None = None, job: str | None = None) -> dict[str, Any]:
    """Counts (``done``, ``failed``, ``pending``, ``quarantined``), one entry per shard (``id``, ``state``,
    ``attempts``, ``finished_at``, ``error``) and one per quarantined image (``id``, ``reason``, ``stage``: ``ingest``
    or ``restore`` with its ``shard``) of one job in ``output``: the one whose hash starts with ``job``, or the only
    one there is."""
    options = dict(storage_options or {})
    plans = [plan for plan in read_plans(output, options) if plan.job_hash.startswith(job or "")]
    if len(plans) != 1:
        held = ", ".join(f"{p.job_hash[:16]} ({p.title})" for p in read_plans(output, options)) or "none"
        wanted = f"a job whose hash starts with {job!r}" if job else "a single job"
        raise FileNotFoundError(f"{output} does not hold {wanted}; its jobs: {held}; name one by its hash")
    return _plan_status(plans[0], options)


def _plan_status(plan: JobPlan, options: dict[str, Any]) -> dict[str, Any]:
    source = open_input(plan, options)
    out = DatasetStore.open(plan.output_store, options)
    refs = out.shards()
    identities = shard_identities(planned_job(plan, options), plan, source, refs)
    done = done_shards(plan, out, refs, identities)
    statuses = read_statuses(plan, options)
    shards = []
    for ref in refs:
        status = statuses.get(ref.key, {})
        if ref.key in done:
            state, finished, error = "done", done[ref.key].written_at, None
        elif status.get("state") == "failed":
            state, finished, error = "failed", status.get("finished_at"), status.get("error")
        else:
            state, finished, error = "pending", None, None
        attempts = int(status.get("attempts", 1 if ref.key in done else 0))
        shards.append({"id": ref.key, "state": state, "attempts": attempts, "finished_at": finished, "error": error})
    counts = {state: sum(s["state"] == state for s in shards) for state in ("done", "failed", "pending")}
    quarantined = quarantined_images(
        source, {key: images for key, images in identities.quarantined.items() if key in done}
    )
    counts["quarantined"] = len(quarantined)
    return {
        "output": plan.output,
        "job_hash": plan.job_hash,
        "title": plan.title,
        "planned_at": plan.planned_at,
        "store": plan.output_store,
        "array": plan.restored_array,
        "model_sha256": plan.model_sha256,
        "code_version": plan.code_version,
        "counts": counts,
        "shards": shards,
        "quarantined": quarantined,
    }
