"""Per-image metric rows of restored shards. A work unit scores each shard as it writes it (behind the model, see
``tasks.restore``) and keeps the rows in the shard's record; ``unit_metrics`` scores the shards whose records have
none for the job's metrics (restored by an older version, or a re-run asking for other metrics), Prefect-cached by
the shards' data checksums.

The cache key names the job hash, the shard, the model sha256, the code version, the checksum of the
restored data from the shard's record and the task's baseline, so a cached row set can only ever describe exactly the pixels
in the store; a re-run reuses it instead of re-reading and re-scoring the shard.
"""

import hashlib
from datetime import timedelta
from typing import Any

import numpy as np
from prefect import task
from prefect.context import TaskRunContext
from prefect.runtime import task_run

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import Job
from diffpir_core.restore import ShardInputs
from diffpir_core.scoring import score_images
from tasks.errors import retry_transient
from tasks.measurements import measurement_inputs
from tasks.plan import RunPlan


def _shard_key(job: Job, plan: RunPlan, shard: ShardRef, checksum: str) -> str:
    metrics = "-".join(job.effective_metrics())
    digest = checksum.removeprefix("sha256:")[:24]
    return (
        f"metrics/{plan.job_hash[:16]}/{shard.key}/{plan.model_sha256[:16]}/{plan.code_version}/{digest}/{metrics}"
        f"/{job.task.BASELINE}"
    )


def unit_metrics_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """``metrics/<job hash>/<shard>/<model sha>/<code version>/<data checksum>/<metrics>/<baseline>`` of a one-shard
    unit; for several shards the sha256 of those keys, joined."""
    keys = [
        _shard_key(parameters["job"], parameters["plan"], shard, checksum)
        for shard, checksum in zip(parameters["shards"], parameters["checksums"], strict=True)
    ]
    return keys[0] if len(keys) == 1 else "metrics/" + hashlib.sha256("\n".join(keys).encode()).hexdigest()


def scoring_key(job: Job) -> str:
    """What a shard's metric rows were computed with (metrics and baseline): rows kept in a record count only for a
    job asking for the same (the metrics are not part of the job hash, so a re-run may ask for others)."""
    return f"{'-'.join(job.effective_metrics())}/{job.task.BASELINE}"


def rows_of(
    job: Job, plan: RunPlan, source: DatasetStore, shard: ShardRef, inputs: ShardInputs, restored: np.ndarray, sample_seconds: float | None
) -> list[dict[str, Any]]:
    """One row per restored image of ``shard``: id, shard, the job's metrics with the baseline's and the gain, sampling
    seconds per image (quarantined images were not restored: no rows for them)."""
    kept = inputs.kept()
    if not kept:
        return []
    truth = source.read_images(shard) if job.mode == "evaluate" else None
    if len(kept) < shard.size:
        inputs, restored = inputs.select(kept), restored[kept]
        truth = None if truth is None else truth[kept]
    scores = score_images(job.task, inputs, restored, truth, job.effective_metrics(), device=plan.device)
    seconds = None if sample_seconds is None else sample_seconds / len(kept)
    return [
        {"id": image_id, "shard": shard.key, "task": job.task_label(), **values, "seconds": seconds}
        for image_id, values in zip(inputs.ids, scores, strict=True)
    ]


def score_shard(job: Job, plan: RunPlan, shard: ShardRef) -> list[dict[str, Any]]:
    """:func:`rows_of` a shard as the store holds it (its restored pixels, measurements and record)."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    restored = out.read_array(shard, plan.restored_array)
    record = out.read_record(shard, plan.restored_array)
    inputs = measurement_inputs(job, plan, source, out, shard)
    return rows_of(job, plan, source, shard, inputs, restored, record.timings.get("sample", 0.0) if record else None)


def _unit_run_name() -> str:
    shards = task_run.parameters["shards"]
    first, last = shards[0].key, shards[-1].key
    return f"metrics-{first}" if first == last else f"metrics-{first}..{last.rsplit('/', 1)[-1]}"


@task(
    name="unit-metrics",
    task_run_name=_unit_run_name,
    cache_key_fn=unit_metrics_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
    retry_condition_fn=retry_transient,
)
def unit_metrics(job: Job, plan: RunPlan, shards: list[ShardRef], checksums: list[str]) -> list[dict[str, Any]]:
    """Prefect task: :func:`score_shard` for a few shards (one task run, one cached result for them all);
    ``checksums`` (their records') only feed the cache key."""
    return [row for shard in shards for row in score_shard(job, plan, shard)]
