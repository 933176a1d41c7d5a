"""A tuning job (``tune:``) inside the ``run`` flow: ingest, then one ``tune-trial`` sub-flow run per trial (named
after its number and settings), each restoring the tuning subset stage by stage in ``run-shards`` sub-flow runs,
then the tuning report and the tuned settings file. The search itself (Optuna, the trial records, pruning, the
objective) is :mod:`diffpir_core.tuning`; the parent's progress artifact counts the trials and names the best."""

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from diffpir_core.io import DatasetStore
from diffpir_core.runs.job import Job
from diffpir_core.runs.results import failed_message
from diffpir_core.tuning.report import progress_line, tuning_artifact
from diffpir_core.tuning.search import (
    TrialRecord,
    input_ids,
    next_params,
    objective_of,
    read_records,
    settings_label,
    should_prune,
    stage_selections,
    trial_job,
    trial_record,
    trial_value,
    write_record,
)
from diffpir_flow.flows.cells import shard_rows
from diffpir_flow.flows.runners import build_task_runner
from diffpir_flow.tasks.ingest import ingest_input, plan_job
from diffpir_flow.tasks.report import write_tuning_report
from diffpir_flow.tasks.retries import with_job_retries


def trial_run_name() -> str:
    """``trial-3-lambda_=7.3-zeta=0.41-sr4-demo``: the trial's number, settings, task and dataset."""
    job = flow_run.parameters["job"]
    job = job if isinstance(job, Job) else Job.model_validate(job)
    settings = settings_label(flow_run.parameters["params"]).replace(", ", "-")
    return f"trial-{flow_run.parameters['number']}-{settings}-{job.task_label()}-{job.dataset_name()}"


@flow(name="tune-trial", flow_run_name=trial_run_name)
def tune_trial(
    job: Job, input_store: str, number: int, params: dict[str, Any], subset: list[str], history: list[TrialRecord]
) -> Any:
    """One trial of ``job``'s tuning with settings ``params``: its job planned on ``input_store``, the ``subset``
    restored stage by stage (shards done before are found done), stopped after a stage when the median pruner says
    so given the finished trials ``history``; keeps its record in the output and returns it."""
    from diffpir_flow.flows.run import run_shards  # the run flow's module runs tuning jobs through this one

    started = time.perf_counter()
    trial = trial_job(job, params)
    plan = with_job_retries(plan_job, job)(trial, input_store, True, f"trial {number}")
    selections = stage_selections(job, plan, subset)
    stage_rows: list[list[dict[str, Any]]] = []
    pruned = False
    for step, selection in enumerate(selections):
        state = run_shards.with_options(task_runner=build_task_runner(trial, plan.threads))(
            job=trial, plan=plan, selection=selection, label=f"trial {number} stage {step + 1}", return_state=True
        )
        outcome = state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            raise outcome
        outcome = outcome.unquote()
        refs = selection.resolve(DatasetStore.open(plan.output_store, job.storage_options))
        failed = dict(outcome["failed"])
        rows = shard_rows(
            trial, plan, [ref for ref in refs if ref.key in outcome["manifests"]], outcome["manifests"], failed
        )
        if failed:
            return Failed(message=f"trial {number}: {failed_message(failed, len(refs))}", data={"failed": failed})
        stage_rows.append([row for ref in refs for row in rows.get(ref.key, [])])
        done_so_far = [row for rows_of_stage in stage_rows for row in rows_of_stage]
        if step < len(selections) - 1 and should_prune(
            job, history, params, step, trial_value(objective_of(job), done_so_far)
        ):
            pruned = True
            break
    record = trial_record(job, number, params, stage_rows, pruned, plan.job_hash, time.perf_counter() - started)
    write_record(job, record)
    return record


def run_tuning(job: Job, force: bool = False) -> Any:
    """Tune ``job``: the trials its output does not hold a record of yet, one ``tune-trial`` sub-flow run each, then
    the report and ``<output>/tuned.json``. Returns the summary, or a Failed state naming the trial that failed."""
    started = time.perf_counter()
    logger = get_run_logger()
    source = with_job_retries(ingest_input, job)(job, force)
    try:
        subset = job.tune.subset.pick(input_ids(source["store"], job.storage_options))  # type: ignore[union-attr]
    except ValueError as err:
        return Failed(message=str(err))
    records = read_records(job)
    total = job.tune.trials  # type: ignore[union-attr]
    logger.info(
        "%d of %d trial(s) finished before; %d to run", min(len(records), total), total, max(0, total - len(records))
    )
    artifact = create_progress_artifact(
        progress=100.0 * min(len(records), total) / total, description=progress_line(job, records)
    )
    while len(records) < total:
        number = len(records)
        params = next_params(job, records)
        state = tune_trial(
            job=job,
            input_store=source["store"],
            number=number,
            params=params,
            subset=subset,
            history=records,
            return_state=True,
        )
        record = state.result(raise_on_failure=False)
        if not state.is_completed():
            return Failed(message=state.message or f"trial {number} failed", data={"output": job.output})
        records.append(record)
        logger.info(
            "trial %d (%s): %s, %s = %s",
            number,
            settings_label(params),
            record.state,
            objective_of(job).name,
            record.value,
        )
        update_progress_artifact(
            artifact_id=artifact, progress=100.0 * len(records) / total, description=progress_line(job, records)
        )
    report = with_job_retries(write_tuning_report, job)(job, records[:total], subset, time.perf_counter() - started)
    create_markdown_artifact(**tuning_artifact(job, report))
    return {**report["summary"], "seconds": {"total": round(time.perf_counter() - started, 3)}}
