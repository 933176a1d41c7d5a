"""The ``evaluate`` flow (metrics and report for a job's existing outputs) and the scoring step it shares
with ``restore``: per-shard metrics tasks, the report files, and the UI artifacts.

UI artifacts of a run: the progress artifact (images and shards restored, the current images/s, in
``restore-shards``), a table
artifact ``<dataset>-<task>-shards`` with one row per shard (status, images, seconds, attempts,
mean metrics with the baseline's and the gain, error), and a markdown artifact ``<dataset>-<task>-report``
with the paper-shaped aggregate table (task × PSNR / SSIM / LPIPS / FID, the baseline and the gain, NFEs,
wall time, images/s), the gain in one sentence, a strip of two samples (images embedded as data URIs,
which the Prefect UI renders) and the report files (pre-signed HTTPS links for S3 outputs).
"""

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from diffpir_core.environment import changed_environment
from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import Job
from diffpir_core.reporting import image_outcome, markdown_table, nothing_restored, verdict
from diffpir_core.variants import Run
from flows.credentials import block_credentials
from flows.naming import evaluate_run_name
from tasks.errors import describe, with_job_retries
from tasks.ingest import ingest_input, plan_run
from tasks.metrics import scoring_key, unit_metrics
from tasks.plan import RunPlan, work_units
from tasks.report import artifact_key, write_comparison_report, write_job_report
from tasks.restore import skipped_manifests

_METRIC_SLOTS = 2  # the flows' thread pool: metrics of a few shards per task, two tasks at a time
_SHARD_COLUMNS = ("shard", "status", "images", "seconds", "sample_seconds", "attempts", "batch_size", "threads")
TABLE_SHARDS = 1000  # rows of the shards table artifact at most: Prefect refuses events over ~1.5 MB, and the UI slows


def shown_shards(table: list[dict[str, Any]], limit: int = TABLE_SHARDS) -> list[dict[str, Any]]:
    """The rows of a shards table worth showing when it has more than ``limit``: every failed or pending shard first,
    then the others in order, back in shard order (all of them are in ``metrics.csv`` and ``diffpir status``)."""
    if len(table) <= limit:
        return table
    finished = ("restored", "skipped", "done")
    chosen = [i for i, row in enumerate(table) if row["status"] not in finished][:limit]
    chosen += [i for i, row in enumerate(table) if row["status"] in finished][: limit - len(chosen)]
    return [table[i] for i in sorted(chosen)]


def _shard_table(
    refs: list[ShardRef], manifests: dict[str, dict[str, Any]], failed: dict[str, str], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per shard for the table artifact: the manifest's facts, mean metrics and the error if any."""
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    table = []
    for ref in refs:
        manifest = manifests.get(ref.key, {})
        entry: dict[str, Any] = {key: manifest.get(key) for key in _SHARD_COLUMNS}
        entry.update(shard=ref.key, images=ref.size, status=manifest.get("status", "failed" if ref.key in failed else "pending"))
        for name in ("psnr", "baseline_psnr", "gain_psnr", "ssim", "gain_ssim", "lpips", "measurement_rms", "baseline_measurement_rms"):
            values = [r[name] for r in by_shard.get(ref.key, []) if r.get(name) is not None]
            if values:
                entry[name] = round(sum(values) / len(values), 4)
        entry["error"] = failed.get(ref.key)
        table.append(entry)
    return table


def score_and_report(
    job: Job,
    plan: RunPlan,
    refs: list[ShardRef],
    manifests: dict[str, dict[str, Any]],
    failed: dict[str, str],
    wall_seconds: float,
) -> dict[str, Any]:
    """Score the finished shards (rows their units kept in the records, else ``unit-metrics``, cached per data
    checksum), write the report, publish the UI artifacts.

    ``failed`` gains an entry for every shard whose scoring failed. Returns the report task's result. The shards
    and rows go to the report task quoted: Prefect would otherwise walk every row looking for futures (minutes at
    100,000 images).
    """
    done = [ref for ref in refs if ref.key in manifests and manifests[ref.key].get("checksum")]
    key = scoring_key(job)
    by_shard = {ref.key: manifests[ref.key]["rows"] for ref in done if manifests[ref.key].get("scored") == key}
    units = work_units([ref for ref in done if ref.key not in by_shard], None, _METRIC_SLOTS)
    futures = [
        with_job_retries(unit_metrics, job).submit(job, plan, unit, [manifests[ref.key]["checksum"] for ref in unit]) for unit in units
    ]
    for unit, future in zip(units, futures, strict=True):
        result = future.result(raise_on_failure=False)
        if future.state.is_completed():
            for row in result:
                by_shard.setdefault(row["shard"], []).append(row)
        else:
            reason = f"metrics: {describe(result) if isinstance(result, BaseException) else future.state.message}"
            failed.update(dict.fromkeys((ref.key for ref in unit), reason))
    scored = [ref for ref in done if ref.key not in failed]
    rows = [row for ref in scored for row in by_shard.get(ref.key, [])]
    report = with_job_retries(write_job_report, job)(job, plan, quote(scored), quote(rows), failed, wall_seconds)
    table = _shard_table(refs, manifests, failed, rows)
    what = f"{plan.variant} on {job.task_label()}" if plan.variant else job.task_label()
    shown = shown_shards(table)
    part = f" ({len(shown)} of {len(table)} shards, failed and pending ones first; all in metrics.csv and `diffpir status`)"
    create_table_artifact(
        key=artifact_key(job, "shards", plan.variant),
        table=shown,
        description=f"Per-shard results of {what} on {job.dataset_name()}" + (part if len(shown) < len(table) else ""),
    )
    problems = "".join(f"\n- **{key}**: {reason}" for key, reason in sorted(failed.items()))
    sentence = verdict(report["summary"])
    create_markdown_artifact(
        key=artifact_key(job, "report", plan.variant),
        markdown=(
            f"# {what} on {job.dataset_name()} ({job.mode})\n\n{markdown_table([report['summary']])}\n"
            + (f"{sentence}\n\n" if sentence else "")
            + (f"## Samples\n\n{report['strip']}\n" if report["strip"] else "")
            + f"## Report files\n\nOutput: `{job.output}`\n\n{report['links']}"
            + (f"\n## Failed shards\n{problems}\n" if failed else "")
        ),
        description="Aggregate results in the paper's shape, the gain over the baseline, samples, report files",
    )
    report["rows"] = rows
    return report


@dataclass
class RunResult:
    """One variant × task of a comparison as the ``restore`` flow ran it: its plan, shards and their outcome
    (none for a variant its method cannot run), then its scored rows and summary."""

    run: Run
    plan: RunPlan | None = None
    refs: list[ShardRef] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)
    prepared: float = 0.0
    finished: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None


def score_comparison(job: Job, results: list[RunResult], wall_seconds: float) -> dict[str, Any]:
    """Score and report every variant × task into its own job folder, then the comparison's table (with sweep plots
    and a sample grid) into ``comparisons/<hash>``, and publish it as the ``<dataset>-comparison`` UI artifact."""
    for result in results:
        if result.plan is not None:
            report = score_and_report(
                result.run.job, result.plan, result.refs, result.outcome["manifests"], result.outcome["failed"],
                result.finished - result.prepared,
            )
            result.rows, result.summary = report["rows"], report["summary"]
    comparison = with_job_retries(write_comparison_report, job)(job, quote(results), wall_seconds)
    failed = {f"{r.run.name} / {r.run.task} / {key}": reason for r in results for key, reason in r.outcome.get("failed", {}).items()}
    create_markdown_artifact(
        key=artifact_key(job, "comparison").replace(f"-{job.task_label()}", ""),
        markdown=(
            f"# Method comparison on {job.dataset_name()} ({job.mode})\n\n{comparison['markdown']}\n"
            f"## Report files\n\nOutput: `{job.output}`\n\n{comparison['links']}"
            + "".join(f"\n- **{key}**: {reason}" for key, reason in sorted(failed.items()))
        ),
        description="Variants × tasks in the paper's layout: NFEs, PSNR, SSIM, LPIPS, FID, seconds per image",
    )
    return {**comparison, "failed": failed}


def summarise_comparison(job: Job, results: list[RunResult], comparison: dict[str, Any], source: dict[str, Any], started: float) -> Any:
    """The ``restore`` flow's return value for a comparison: shard counts over every variant, the table, and the
    report; a Failed state naming the variants' failed shards when there are any."""
    manifests = [m for r in results for m in r.outcome.get("manifests", {}).values()]
    images, quarantined = image_outcome(manifests)
    summary = {
        "shards": sum(len(r.refs) for r in results),
        "done": len(manifests),
        "restored": sum(m["status"] == "restored" for m in manifests),
        "skipped": sum(m["status"] == "skipped" for m in manifests),
        "images_restored": images,
        "quarantined": quarantined,
        "failed": comparison["failed"],
        "variants": comparison["table"],
        "report": comparison["uris"].get("report.html"),
        "output": job.output,
        "job": comparison["uris"]["report.html"].rsplit("/", 1)[0],
        "results": ", ".join(f"{r.plan.job_dir}/restored.zarr" for r in results if r.plan is not None),
        "input_changes": source["changes"],
        "seconds": {"total": round(time.perf_counter() - started, 3)},
    }
    if comparison["failed"]:
        return Failed(message=f"{len(comparison['failed'])} shard(s) of the comparison failed", data=summary)
    if message := nothing_restored(images, quarantined):
        return Failed(message=message, data=summary)
    return summary


def done_manifests(job: Job, plan: RunPlan, refs: list[ShardRef]) -> dict[str, dict[str, Any]]:
    """Manifests of the shards whose records match the plan (what ``evaluate`` scores), checked in bulk."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    found = skipped_manifests(job, plan, source, out, refs)
    return {key: {**m, "status": "done"} for key, m in found.items()}


@flow(name="evaluate", flow_run_name=evaluate_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def evaluate(job: Job, credentials_block: str | None = None) -> dict[str, Any]:
    """Metrics and report for the outputs a job has already written (shards not done are listed as pending); for a
    comparison, every variant × task and the comparison's table. ``credentials_block`` as for ``restore``."""
    with changed_environment(block_credentials(credentials_block)):
        return _evaluate(job)


def _evaluate(job: Job) -> dict[str, Any]:
    started = time.perf_counter()
    source = with_job_retries(ingest_input, job)(job)
    results = []
    for run in job.runs():
        if run.job is None:
            results.append(RunResult(run))
            continue
        plan = with_job_retries(plan_run, job)(run.job, source["store"], job.is_comparison(), run.name if job.is_comparison() else None)
        refs = DatasetStore.open(plan.output_store, job.storage_options).shards()
        manifests = done_manifests(run.job, plan, refs)
        get_run_logger().info("%s on %s: %d of %d shard(s) are done and will be scored", run.name, run.task, len(manifests), len(refs))
        results.append(RunResult(run, plan, refs, {"manifests": manifests, "failed": {}}))
    if job.is_comparison():
        comparison = score_comparison(job, results, time.perf_counter() - started)
        done = sum(len(r.outcome.get("manifests", {})) for r in results)
        return {"done": done, "shards": sum(len(r.refs) for r in results), "report": comparison["uris"].get("report.html")}
    (result,) = results
    report = score_and_report(job, result.plan, result.refs, result.outcome["manifests"], {}, time.perf_counter() - started)
    return {"done": len(result.outcome["manifests"]), "shards": len(result.refs), "report": report["uris"].get("report.html")}
