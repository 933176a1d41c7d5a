"""The ``restore`` flow: ingest if needed → one ``restore-shard`` task per shard → metrics → report.

The shard tasks run in a sub-flow (``restore-shards``) whose task runner comes from the job
(bounded threads, or Dask with GPU resources), so one deployment serves local and cluster jobs.
A job in which some shards failed ends **Failed**, naming the shards and why; running it again
(CLI, deployment run, or the UI's Retry) skips every shard whose record matches and runs the rest.
"""

import time
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import DaskRunner, Job
from flows.evaluate import RunResult, score_and_report, score_comparison, summarise_comparison
from flows.naming import job_run_name, shards_run_name
from flows.progress import ShardProgress
from flows.runners import build_task_runner, check_gpu_workers, gpu_annotations, gpus_per_task
from tasks.errors import EndpointUnreachable, describe, with_job_retries
from tasks.ingest import ingest_input, plan_run
from tasks.plan import RunPlan
from tasks.restore import restore_shard


def _failed_message(failed: dict[str, str], total: int) -> str:
    listed = "; ".join(f"{key}: {reason}" for key, reason in sorted(failed.items())[:10])
    more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
    return f"{len(failed)}/{total} shard(s) failed: {listed}{more}"


def _unreachable_message(failed: dict[str, str], total: int) -> str | None:
    """One message for a run stopped by the storage circuit breaker (``tasks.errors.EndpointUnreachable``), else None."""
    causes = [reason for reason in failed.values() if reason.startswith(EndpointUnreachable.__name__)]
    if not causes:
        return None
    cause = causes[0][causes[0].index("storage endpoint unreachable") :]
    shards = ", ".join(sorted(failed)[:20]) + (f" (and {len(failed) - 20} more)" if len(failed) > 20 else "")
    return f"{len(failed)}/{total} shard(s) not restored, {cause}; shards: {shards}"


@flow(name="restore-shards", flow_run_name=shards_run_name)
def restore_shards(job: Job, plan: RunPlan, shards: list[ShardRef]) -> Any:
    """Map ``restore-shard`` over ``shards``: manifests of finished shards and reasons of failed ones
    (as the Failed state's data when any shard failed, so the sub-flow run shows it too)."""
    logger = get_run_logger()
    gpus = gpus_per_task(job, plan.device)
    if isinstance(job.runner, DaskRunner):
        check_gpu_workers(FlowRunContext.get().task_runner, gpus, job.runner.gpu_wait_s)
    progress = ShardProgress(len(shards), f"{job.task_label()} on {job.dataset_name()}", images=sum(ref.size for ref in shards))
    shard_task = with_job_retries(restore_shard, job)
    with gpu_annotations(gpus):
        futures = shard_task.map(unmapped(job), unmapped(plan), shards)
    by_run = {future.task_run_id: ref for future, ref in zip(futures, shards, strict=True)}
    manifests: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for future in as_completed(list(futures)):
        ref = by_run[future.task_run_id]
        outcome = future.result(raise_on_failure=False)
        if future.state.is_completed():
            manifests[ref.key] = outcome
        else:
            failed[ref.key] = describe(outcome) if isinstance(outcome, BaseException) else str(future.state.message)
            logger.error("shard %s failed: %s", ref.key, failed[ref.key])
        progress.advance(outcome)
    outcome = {"manifests": manifests, "failed": failed}
    return Failed(message=_failed_message(failed, len(shards)), data=outcome) if failed else outcome


def select_shards(store: DatasetStore, keys: list[str] | None) -> list[ShardRef]:
    """All shards of the store, or those named in ``keys`` (e.g. ``64x64/000003``); unknown keys are an error."""
    refs = store.shards()
    if keys is None:
        return refs
    known = {ref.key: ref for ref in refs}
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(f"unknown shard(s) {unknown}; this store has {sorted(known)[:5]}... ({len(known)} shards)")
    return [known[key] for key in keys]


@flow(name="restore", flow_run_name=job_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def restore(job: Job, shards: list[str] | None = None, force: bool = False) -> Any:
    """Restore a dataset: every shard not yet done (or only ``shards``), then metrics and the report.
    ``force``: write into an output that is not empty although diffpir did not make it.
    A comparison (``variants``/``tasks``) runs ``restore-shards`` once per variant × task on the shared
    measurements, then one table of all of them (``score_comparison``)."""
    started = time.perf_counter()
    source = with_job_retries(ingest_input, job)(job, force)
    results: list[RunResult] = []
    for run in job.runs():
        if run.job is None:
            results.append(RunResult(run))
            continue
        plan = with_job_retries(plan_run, job)(run.job, source["store"], job.is_comparison())
        refs = select_shards(DatasetStore.open(plan.output_store, job.storage_options), shards)
        prepared = time.perf_counter()
        shards_state = restore_shards.with_options(task_runner=build_task_runner(run.job))(
            job=run.job, plan=plan, shards=refs, return_state=True
        )
        outcome = shards_state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(RunResult(run, plan, refs, outcome, prepared, time.perf_counter()))
        failed: dict[str, str] = outcome["failed"]
        if unreachable := _unreachable_message(failed, len(refs)):
            # metrics and the report would only wait on the same dead endpoint: the message names the shards instead
            return Failed(message=unreachable, data={"failed": failed, "output": job.output, "job": plan.job_dir, "shards": len(refs)})
    if job.is_comparison():
        return summarise_comparison(job, results, score_comparison(job, results, time.perf_counter() - started), source, started)
    (result,) = results
    plan, refs, outcome, failed = result.plan, result.refs, result.outcome, result.outcome["failed"]
    restored = time.perf_counter()
    report = score_and_report(job, plan, refs, outcome["manifests"], failed, time.perf_counter() - started)
    timings = {
        "prepare": result.prepared - started,
        "restore": restored - result.prepared,
        "report": time.perf_counter() - restored,
        "sampling": sum(m.get("sample_seconds", 0.0) for m in outcome["manifests"].values()),
    }
    summary = {
        "shards": len(refs),
        "done": len(outcome["manifests"]),
        "restored": sum(m["status"] == "restored" for m in outcome["manifests"].values()),
        "skipped": sum(m["status"] == "skipped" for m in outcome["manifests"].values()),
        "failed": failed,
        "quarantined": {i: r for m in outcome["manifests"].values() for i, r in (m.get("quarantined") or {}).items()},
        "report": report["uris"].get("report.html"),
        "output": job.output,
        "job": plan.job_dir,
        "input_changes": source["changes"],
        "seconds": {key: round(value, 3) for key, value in timings.items()},
    }
    if failed:
        return Failed(message=_failed_message(failed, len(refs)), data=summary)
    return summary
