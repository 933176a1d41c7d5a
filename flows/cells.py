"""The skeleton both flows share: ingest, plan every cell (a plain job is one cell), restore its shards or find
those done, score and report every cell, the comparison's table, one summary."""

import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed
from prefect.utilities.annotations import quote

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.runs.artifacts import comparison_artifact, report_artifact, shards_artifact
from diffpir_core.runs.failures import describe, shard_failure
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, work_units
from diffpir_core.runs.results import CellResult, all_failed, failed_message, summarise
from diffpir_core.runs.scoring import scoring_key
from diffpir_core.runs.shard import done_manifests
from diffpir_flow.tasks.ingest import ingest_input, plan_job
from diffpir_flow.tasks.report import write_comparison_report, write_job_report
from diffpir_flow.tasks.retries import with_job_retries
from diffpir_flow.tasks.units import unit_metrics

RestoreCell = Callable[[Job, JobPlan, str], tuple[list[ShardRef], dict[str, Any]]]
"""Restores one cell's shards: (cell job, plan, label) -> (its shards, their outcome)."""
METRIC_SLOTS = 2  # the flows' thread pool: metrics of a few shards per task, two tasks at a time


def run_cells(job: Job, restore: RestoreCell | None = None, force: bool = False) -> Any:
    """Run ``job`` cell by cell: ``restore(cell job, plan, label) -> (refs, outcome)`` restores a cell's shards (the
    ``run`` flow); without it, the shards already done are scored (the ``score`` flow). Returns the summary, or a
    Failed state with it when shards failed or nothing was restored."""
    started = time.perf_counter()
    source = with_job_retries(ingest_input, job)(job, force)
    comparison = job.is_comparison()
    results: list[CellResult] = []
    for cell in job.cells():
        if cell.job is None:
            results.append(CellResult(cell))
            continue
        variant = cell.name if comparison else None
        plan = with_job_retries(plan_job, job)(cell.job, source["store"], comparison, variant)
        result = CellResult(cell, plan, prepared=time.perf_counter())
        if restore is not None:
            result.refs, result.outcome = restore(cell.job, plan, f"{cell.name} on {cell.task}" if comparison else "")
        else:
            result.refs = DatasetStore.open(plan.output_store, job.storage_options).shards()
            result.outcome = {"manifests": done_manifests(cell.job, plan, result.refs), "failed": {}}
            get_run_logger().info(
                "%s: %d of %d shard(s) are done and will be scored",
                plan.title,
                len(result.manifests),
                len(result.refs),
            )
        result.finished = time.perf_counter()
        results.append(result)
        if any(failure.unreachable for failure in result.failed.values()):
            # metrics and the report would only wait on the same dead endpoint: the message names the shards instead
            message = failed_message(result.failed, len(result.refs))
            return Failed(message=message, data={"failed": result.failed, "output": job.output, "job": plan.job_dir})
    report = None
    try:
        for result in results:
            if result.plan is not None:
                wall = result.finished - result.prepared if restore is not None else time.perf_counter() - started
                score_and_report(result.cell.job, result, wall)
        if comparison:
            report = with_job_retries(write_comparison_report, job)(job, quote(results), time.perf_counter() - started)
            create_markdown_artifact(**comparison_artifact(job, results, report))
    except Exception as err:  # a full or read-only output fails the shards first: they are the news, not the report
        if not (failed := all_failed(results, comparison)):
            raise
        message = (
            f"{failed_message(failed, sum(len(r.refs) for r in results))}; the report failed too: {describe(err)}"
        )
        return Failed(message=message, data={"failed": failed, "output": job.output})
    summary, failure = summarise(job.output, results, source, started, report)
    return Failed(message=failure, data=summary) if failure else summary


def score_and_report(job: Job, result: CellResult, wall_seconds: float) -> None:
    """Score a cell's finished shards (rows their units kept in the records, else ``unit-metrics``, cached per data
    checksum), write its report, publish its UI artifacts; ``result`` gains rows, summary, report URIs, and a failed
    entry for every shard whose scoring failed. Shards and rows go to the report task quoted: Prefect would otherwise
    walk every row looking for futures (minutes at 100,000 images)."""
    plan: JobPlan = result.plan  # type: ignore[assignment]
    manifests, failed = result.manifests, result.failed
    done = [ref for ref in result.refs if ref.key in manifests and manifests[ref.key].get("checksum")]
    by_shard = shard_rows(job, plan, done, manifests, failed)
    scored = [ref for ref in done if ref.key not in failed]
    result.rows = [row for ref in scored for row in by_shard.get(ref.key, [])]
    report = with_job_retries(write_job_report, job)(
        job, plan, quote(scored), quote(result.rows), failed, wall_seconds
    )
    result.summary, result.report_uris = report["summary"], report["uris"]
    create_table_artifact(**shards_artifact(job, plan, result))
    create_markdown_artifact(**report_artifact(job, plan, result, report))


def shard_rows(
    job: Job,
    plan: JobPlan,
    done: list[ShardRef],
    manifests: dict[str, dict[str, Any]],
    failed: dict[str, Any],
) -> dict[str, list[dict[str, Any]]]:
    """The metric rows of each finished shard of ``done``: those its unit kept in its record, else ``unit-metrics``
    (cached per data checksum); a shard whose scoring failed is added to ``failed`` instead."""
    key = scoring_key(job)
    by_shard = {ref.key: manifests[ref.key]["rows"] for ref in done if manifests[ref.key].get("scored") == key}
    units = work_units([ref for ref in done if ref.key not in by_shard], None, METRIC_SLOTS)
    metrics = with_job_retries(unit_metrics, job)
    futures = [metrics.submit(job, plan, unit, [manifests[ref.key]["checksum"] for ref in unit]) for unit in units]
    for unit, future in zip(units, futures, strict=True):
        rows = future.result(raise_on_failure=False)
        if future.state.is_completed():
            for row in rows:
                by_shard.setdefault(row["shard"], []).append(row)
        else:
            err = rows if isinstance(rows, BaseException) else RuntimeError(future.state.message)
            failed.update({ref.key: shard_failure(ref.key, err, what="metrics") for ref in unit})
    return by_shard
