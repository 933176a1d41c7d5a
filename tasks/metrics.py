"""``shard_metrics``: per-image metric rows of one restored shard (Prefect-cached by the shard's data checksum).

The cache key names the job hash, the shard, the model sha256, the code version and the checksum of the
restored data from the shard's record, so a cached row set can only ever describe exactly the pixels
in the store; a re-run reuses it instead of re-reading and re-scoring the shard.
"""

from datetime import timedelta
from typing import Any

import torch
from prefect import task
from prefect.context import TaskRunContext

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import Job
from diffpir_core.metrics import measurement_rms, score_batch, uint8_to_float
from tasks.errors import retry_transient
from tasks.measurements import measurement_inputs
from tasks.plan import RunPlan


def shard_metrics_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """``metrics/<job hash>/<shard>/<model sha>/<code version>/<data checksum>/<metrics>``."""
    plan: RunPlan = parameters["plan"]
    shard: ShardRef = parameters["shard"]
    metrics = "-".join(parameters["job"].effective_metrics())
    digest = parameters["checksum"].removeprefix("sha256:")[:24]
    return (
        f"metrics/{plan.job_hash[:16]}/{shard.key}/{plan.model_sha256[:16]}/{plan.code_version}/{digest}/{metrics}"
    )


def score_shard(job: Job, plan: RunPlan, shard: ShardRef) -> list[dict[str, Any]]:
    """One row per image: id, shard, the job's metrics, and the shard's sampling seconds per image."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    restored_u8 = out.read_array(shard, plan.restored_array)
    record = out.read_record(shard, plan.restored_array)
    restored = uint8_to_float(restored_u8)
    wanted = job.effective_metrics()
    rows: list[dict[str, Any]] = [
        {"id": image_id, "shard": shard.key, "task": job.task_label()} for image_id in shard.ids
    ]
    pixel = [m for m in wanted if m not in ("consistency", "fid")]
    if pixel:
        scores = score_batch(restored, source.read_images(shard), pixel, border=job.task.metric_border, device=plan.device)
        for row, values in zip(rows, scores.rows(), strict=True):
            row.update(values)
    if "consistency" in wanted:
        inputs = measurement_inputs(job, plan, source, out, shard)
        operator = job.task.operator(inputs.params)
        rms = measurement_rms(operator, restored, inputs.y.to(torch.float32))
        for row, value in zip(rows, rms, strict=True):
            row["measurement_rms"] = float(value)
    seconds = (record.timings.get("sample", 0.0) / shard.size) if record else None
    for row in rows:
        row["seconds"] = seconds
    return rows


@task(
    name="shard-metrics",
    task_run_name="metrics-{shard.key}",
    cache_key_fn=shard_metrics_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
    retry_condition_fn=retry_transient,
)
def shard_metrics(job: Job, plan: RunPlan, shard: ShardRef, checksum: str) -> list[dict[str, Any]]:
    """Prefect task around :func:`score_shard`; ``checksum`` (the record's) only feeds the cache key."""
    return score_shard(job, plan, shard)
