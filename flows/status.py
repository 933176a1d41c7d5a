"""``diffpir status OUTPUT``: shards done / failed (with reason) / pending, read from the output store alone.

Done means what the restore task means by it: a record with the run's identity whose checksum matches
the data. Failed means a status file says the last attempt failed and the shard is not done.
"""

import json
from typing import Any

from diffpir_core.io import DatasetStore
from tasks.plan import RunPlan, input_checksum, read_status, read_text


def job_status(output: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts (``done``, ``failed``, ``pending``, ``quarantined``) and one entry per shard
    (``id``, ``state``, ``attempts``, ``finished_at``, ``error``) for the job last run into ``output``."""
    options = dict(storage_options or {})
    text = read_text(output, "run.json", options)
    if text is None:
        raise FileNotFoundError(f"{output} has no run.json: no job has been run into this output yet")
    plan = RunPlan.model_validate(json.loads(text))
    source = DatasetStore.open(plan.input_store, options)
    out = DatasetStore.open(plan.output_store, options)
    shards = []
    for ref in source.shards():
        status = read_status(plan, ref, options) or {}
        record = out.read_record(ref, plan.restored_array)
        done = record is not None and out.record_matches(ref, plan.restored_array, plan.identity(input_checksum(source, ref)))
        if done:
            state, finished, error = "done", record.written_at, None
        elif status.get("state") == "failed":
            state, finished, error = "failed", status.get("finished_at"), status.get("error")
        else:
            state, finished, error = "pending", None, None
        attempts = int(status.get("attempts", record.metrics.get("attempts", 1) if done else 0))
        shards.append({"id": ref.key, "state": state, "attempts": attempts, "finished_at": finished, "error": error})
    counts = {state: sum(s["state"] == state for s in shards) for state in ("done", "failed", "pending")}
    counts["quarantined"] = len(source.quarantine())
    return {
        "output": output,
        "job_hash": plan.job_hash,
        "model_sha256": plan.model_sha256,
        "code_version": plan.code_version,
        "counts": counts,
        "shards": shards,
    }
