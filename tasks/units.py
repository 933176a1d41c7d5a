"""Prefect tasks of a work unit: ``restore-unit`` (restore, write and score a few shards) and ``unit-metrics`` (score
the finished shards whose records hold no rows for the job's metrics, Prefect-cached by the shards' data checksums).

The metrics cache key names the job hash, the shard, the model sha256, the code version, the checksum of the
restored data from the shard's record and the task's baseline, so a cached row set can only ever describe exactly
the pixels in the store; a re-run reuses it instead of re-reading and re-scoring the shard.
"""

import hashlib
from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import task_run

from diffpir_core.io import ShardRef
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan
from diffpir_core.runs.scoring import score_shard, shard_metrics_key
from diffpir_core.runs.unit import run_unit, unit_name
from diffpir_flow.tasks.retries import retry_transient


def unit_metrics_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The :func:`shard_metrics_key` of a one-shard unit; for several shards the sha256 of those keys, joined."""
    keys = [
        shard_metrics_key(parameters["job"], parameters["plan"], shard, checksum)
        for shard, checksum in zip(parameters["shards"], parameters["checksums"], strict=True)
    ]
    return keys[0] if len(keys) == 1 else "metrics/" + hashlib.sha256("\n".join(keys).encode()).hexdigest()


def _restore_run_name() -> str:
    return unit_name(task_run.parameters["shards"])


def _metrics_run_name() -> str:
    return unit_name(task_run.parameters["shards"]).replace("restore-", "metrics-", 1)


@task(
    name="restore-unit",
    task_run_name=_restore_run_name,
    tags=["diffpir-restore"],  # `prefect concurrency-limit create diffpir-restore N` caps units in flight
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def restore_unit(job: Job, plan: JobPlan, shards: list[ShardRef]) -> dict[str, Any]:
    """:func:`~diffpir_core.runs.unit.run_unit`, its try counted by Prefect's run count (retried when a shard failed
    transiently: :func:`~diffpir_flow.tasks.retries.retry_transient`)."""
    return run_unit(job, plan, shards, attempt=task_run.run_count or 1, logger=get_run_logger())


@task(
    name="unit-metrics",
    task_run_name=_metrics_run_name,
    cache_key_fn=unit_metrics_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
    retry_condition_fn=retry_transient,
)
def unit_metrics(job: Job, plan: JobPlan, shards: list[ShardRef], checksums: list[str]) -> list[dict[str, Any]]:
    """:func:`~diffpir_core.runs.scoring.score_shard` for a few shards (one task run, one cached result for them all);
    ``checksums`` (their records') only feed the cache key."""
    return [row for shard in shards for row in score_shard(job, plan, shard)]
