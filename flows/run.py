"""The ``restore`` flow: ingest if needed → ``restore-unit`` tasks (a few shards each) → metrics → report.

The units run in a sub-flow (``restore-shards``) whose task runner comes from the job (bounded threads, or Dask with
GPU resources), so one deployment serves local and cluster jobs. The sub-flow gets a compact selection of shards
(every shard, or index ranges), skips the shards already done in bulk before dispatching anything, and streams the
rest: at most ``dispatch.window`` units (default two per model slot) are submitted at a time, the next as one
finishes, so the flow's memory and the task runner's queue stay flat whatever the number of shards.
A job in which some shards failed ends **Failed**, naming the shards and why; running it again
(CLI, deployment run, or the UI's Retry) skips every shard whose record matches and runs the rest.
"""

import time
from itertools import islice
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from diffpir_core.environment import changed_environment
from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import DaskRunner, Job
from diffpir_core.progress import watching
from diffpir_core.reporting import image_outcome, nothing_restored
from flows.credentials import block_credentials
from flows.evaluate import RunResult, score_and_report, score_comparison, summarise_comparison
from flows.naming import job_run_name, shards_run_name
from flows.progress import ShardProgress
from flows.runners import auto_unit_shards, build_task_runner, check_gpu_workers, gpu_annotations, gpus_per_task, model_slots
from tasks.errors import EndpointUnreachable, describe, with_job_retries
from tasks.ingest import ingest_input, plan_run
from tasks.plan import RunPlan, ShardSelection, work_units
from tasks.restore import restore_unit, skipped_manifests


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


def _already_done(job: Job, plan: RunPlan, refs: list[ShardRef]) -> dict[str, dict[str, Any]]:
    """``skipped`` manifests of the shards whose records match, checked in bulk in the flow process (no task runs,
    no prior): a finished job re-runs in seconds per thousand shards."""
    try:
        source = DatasetStore.open(plan.input_store, job.storage_options)
        out = DatasetStore.open(plan.output_store, job.storage_options)
        return skipped_manifests(job, plan, source, out, refs)
    except Exception:  # unreachable or being refreshed: the units find out, shard by shard, with retries and the breaker
        return {}


def _index_records(job: Job, plan: RunPlan) -> None:
    """Fold the shards' records into the output's record index, so that later checks (``diffpir status``, a re-run)
    read one object instead of one per shard. It is only a cache: failing to write it costs speed, not results."""
    try:
        DatasetStore.open(plan.output_store, job.storage_options, writable=True).index_records(plan.restored_array)
    except Exception as err:
        get_run_logger().warning(
            "could not update the record index of %s (%s); status checks read each shard's record instead, which is slower",
            plan.output_store,
            describe(err),
        )


def _dispatch(job: Job, plan: RunPlan, units: list[list[ShardRef]], window: int, progress: ShardProgress) -> tuple[dict, dict]:
    """Run ``units`` with at most ``window`` of them submitted at once, submitting the next as each one finishes."""
    logger = get_run_logger()
    unit_task = with_job_retries(restore_unit, job)
    waiting = iter(units)
    in_flight: dict[Any, list[ShardRef]] = {}
    manifests: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    with gpu_annotations(gpus_per_task(job, plan.device)):
        while True:
            for unit in islice(waiting, window - len(in_flight)):
                in_flight[unit_task.submit(job, plan, unit)] = unit
            if not in_flight:
                break
            future = next(as_completed(list(in_flight)))
            unit = in_flight.pop(future)
            outcome = future.result(raise_on_failure=False)
            if not future.state.is_completed():  # the unit itself failed (a crashed worker, a store it cannot open)
                reason = describe(outcome) if isinstance(outcome, BaseException) else str(future.state.message)
                found = _already_done(job, plan, unit)  # what it finished before it failed stays finished
                outcome = {"manifests": found, "failed": {ref.key: reason for ref in unit if ref.key not in found}}
            manifests.update(outcome["manifests"])
            failed.update(outcome["failed"])
            for ref in unit:
                if ref.key in outcome["failed"]:
                    logger.error("shard %s failed: %s", ref.key, outcome["failed"][ref.key])
                progress.advance(outcome["manifests"].get(ref.key, outcome["failed"].get(ref.key)), ref.key)
    return manifests, failed


@flow(name="restore-shards", flow_run_name=shards_run_name)
def restore_shards(job: Job, plan: RunPlan, selection: ShardSelection, label: str = "") -> Any:
    """Restore the selected shards of the job's store: those already done are recognised in bulk here, the rest run
    in work units (``restore-unit`` tasks) streamed to the task runner a bounded window at a time. Returns the
    manifests of finished shards and the reasons of failed ones, quoted (as the Failed state's data when any shard
    failed, so the sub-flow run shows it too). ``label``: a comparison's variant and task, for names and progress."""
    gpus = gpus_per_task(job, plan.device)
    runner = FlowRunContext.get().task_runner
    if isinstance(job.runner, DaskRunner):
        check_gpu_workers(runner, gpus, job.runner.gpu_wait_s)
    refs = selection.resolve(DatasetStore.open(plan.output_store, job.storage_options))
    progress = ShardProgress(len(refs), f"{label or job.task_label()} on {job.dataset_name()}", images=sum(ref.size for ref in refs))
    manifests = _already_done(job, plan, refs)
    for ref in refs:
        if ref.key in manifests:
            progress.advance(manifests[ref.key])
    pending = [ref for ref in refs if ref.key not in manifests]
    slots = model_slots(job, runner, gpus)
    units = work_units(pending, job.dispatch.unit_shards, slots, auto_unit_shards(job))
    window = job.dispatch.units_in_flight(slots)
    get_run_logger().info(
        "%d shard(s) already done; %d to restore in %d work unit(s), %d in flight at most", len(manifests), len(pending), len(units), window
    )
    with watching(progress.on_step):  # sampler steps of the shards restored in this process
        restored, failed = _dispatch(job, plan, units, window, progress)
    manifests.update(restored)
    _index_records(job, plan)
    outcome = quote({"manifests": manifests, "failed": failed})  # returned as is: Prefect need not walk every manifest
    return Failed(message=_failed_message(failed, len(refs)), data=outcome) if failed else outcome


def select_shards(store: DatasetStore, keys: list[str] | None) -> ShardSelection:
    """All shards of the store, or those named in ``keys`` (e.g. ``64x64/000003``); unknown keys are an error."""
    if keys is None:
        return ShardSelection()
    known = {ref.key for ref in store.shards()}
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(f"unknown shard(s) {unknown}; this store has {sorted(known)[:5]}... ({len(known)} shards)")
    return ShardSelection.of_keys(keys)


@flow(name="restore", flow_run_name=job_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def restore(job: Job, shards: list[str] | None = None, force: bool = False, credentials_block: str | None = None) -> Any:
    """Restore a dataset: every shard not yet done (or only ``shards``), then metrics and the report.
    ``force``: write into an output that is not empty although diffpir did not make it.
    ``credentials_block``: name of a Prefect Secret block with the storage credentials (``flows.credentials``);
    without it they come from the worker's environment.
    A comparison (``variants``/``tasks``) runs ``restore-shards`` once per variant × task on the shared
    measurements, then one table of all of them (``score_comparison``)."""
    with changed_environment(block_credentials(credentials_block)):
        return _restore(job, shards, force)


def _restore(job: Job, shards: list[str] | None, force: bool) -> Any:
    started = time.perf_counter()
    source = with_job_retries(ingest_input, job)(job, force)
    results: list[RunResult] = []
    for run in job.runs():
        if run.job is None:
            results.append(RunResult(run))
            continue
        plan = with_job_retries(plan_run, job)(run.job, source["store"], job.is_comparison(), run.name if job.is_comparison() else None)
        out = DatasetStore.open(plan.output_store, job.storage_options)
        selection = select_shards(out, shards)
        refs = selection.resolve(out)
        prepared = time.perf_counter()
        shards_state = restore_shards.with_options(task_runner=build_task_runner(run.job, plan.threads))(
            job=run.job, plan=plan, selection=selection, label=f"{run.name} on {run.task}" if job.is_comparison() else "",
            return_state=True,
        )
        outcome = shards_state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            raise outcome
        outcome = outcome.unquote()
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
    images, quarantined = image_outcome(outcome["manifests"].values())
    summary = {
        "shards": len(refs),
        "done": len(outcome["manifests"]),
        "restored": sum(m["status"] == "restored" for m in outcome["manifests"].values()),
        "skipped": sum(m["status"] == "skipped" for m in outcome["manifests"].values()),
        "failed": failed,
        "images_restored": images,
        "quarantined": quarantined,
        "report": report["uris"].get("report.html"),
        "output": job.output,
        "job": plan.job_dir,
        "input_changes": source["changes"],
        "seconds": {key: round(value, 3) for key, value in timings.items()},
    }
    if failed:
        return Failed(message=_failed_message(failed, len(refs)), data=summary)
    if message := nothing_restored(images, quarantined):
        return Failed(message=message, data=summary)
    return summary
