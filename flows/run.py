"""The ``run`` flow: ingest if needed → ``restore-unit`` tasks (a few shards each) → metrics → report.

The units run in a sub-flow (``run-shards``) whose task runner comes from the job (bounded threads, or Dask with
GPU resources), so one deployment serves local and cluster jobs. The sub-flow gets a compact selection of shards
(every shard, or index ranges), skips the shards already done in bulk before dispatching anything, and streams the
rest: at most ``dispatch.window`` units (default two per model slot) are submitted at a time, the next as one
finishes, so the flow's memory and the task runner's queue stay flat whatever the number of shards.
A job in which some shards failed ends **Failed**, naming the shards and why; running it again
(CLI, deployment run, or the UI's Retry) skips every shard that is done and runs the rest.
"""

from itertools import islice
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.runs.dispatch import (
    Outage,
    auto_unit_shards,
    check_gpu_workers,
    gpus_per_task,
    model_slots,
    unit_outcome,
)
from diffpir_core.runs.environment import changed_environment
from diffpir_core.runs.failures import ShardFailure
from diffpir_core.runs.job import Job
from diffpir_core.runs.options import DaskRunner
from diffpir_core.runs.plan import JobPlan, ShardSelection, work_units
from diffpir_core.runs.priors import configure_process
from diffpir_core.runs.progress import watching
from diffpir_core.runs.results import failed_message
from diffpir_core.runs.shard import already_done
from diffpir_flow.flows.cells import run_cells
from diffpir_flow.flows.credentials import block_credentials
from diffpir_flow.flows.naming import job_run_name, shards_run_name
from diffpir_flow.flows.progress import ShardProgress
from diffpir_flow.flows.runners import build_task_runner, gpu_annotations
from diffpir_flow.flows.tune import run_tuning
from diffpir_flow.tasks.retries import with_job_retries
from diffpir_flow.tasks.units import restore_unit


def _dispatch(
    job: Job, plan: JobPlan, units: list[list[ShardRef]], window: int, progress: ShardProgress
) -> tuple[dict, dict]:
    """Run ``units`` with at most ``window`` of them submitted at once, submitting the next as each one finishes, and
    none once a few units in a row found the storage endpoint down (:class:`~diffpir_core.runs.dispatch.Outage`)."""
    logger = get_run_logger()
    unit_task = with_job_retries(restore_unit, job)
    waiting, in_flight, outage = iter(units), {}, Outage()
    manifests: dict[str, dict[str, Any]] = {}
    failed: dict[str, ShardFailure] = {}
    with gpu_annotations(gpus_per_task(job, plan.device)):
        while True:
            for unit in islice(waiting, 0 if outage.cause else window - len(in_flight)):
                in_flight[unit_task.submit(job, plan, unit)] = unit
            if not in_flight:
                break
            future = next(as_completed(list(in_flight)))
            outcome = future.result(raise_on_failure=False)
            if not future.state.is_completed() and not isinstance(outcome, BaseException):
                outcome = RuntimeError(future.state.message)  # a crashed worker
            done, failures = unit_outcome(job, plan, in_flight.pop(future), outcome)
            outage.record(list(failures.values()))
            manifests.update(done)
            failed.update(failures)
            for key, failure in failures.items():
                logger.error("shard %s failed: %s", key, failure)
            for key, item in {**done, **failures}.items():
                progress.advance(item, key)
    if outage.cause is not None:
        failed.update(not_run := outage.not_run(list(waiting)))
        for key, item in not_run.items():
            progress.advance(item, key)
    return manifests, failed


@flow(name="run-shards", flow_run_name=shards_run_name)
def run_shards(job: Job, plan: JobPlan, selection: ShardSelection, label: str = "") -> Any:
    """Restore the selected shards of a cell: those already done are recognised in bulk here, the rest run in work
    units (``restore-unit`` tasks) streamed to the task runner a bounded window at a time. Returns the manifests of
    finished shards and the reasons of failed ones, quoted (as the Failed state's data when any shard failed, so the
    sub-flow run shows it too). ``label``: a comparison's variant and task, for names and progress."""
    configure_process(job, plan.threads)
    gpus = gpus_per_task(job, plan.device)
    runner = FlowRunContext.get().task_runner
    if isinstance(job.runner, DaskRunner):
        check_gpu_workers(runner, gpus, job.runner.gpu_wait_s)
    refs = selection.resolve(DatasetStore.open(plan.output_store, job.storage_options))
    progress = ShardProgress(
        len(refs), f"{label or job.task_label()} on {job.dataset_name()}", images=sum(ref.size for ref in refs)
    )
    manifests = already_done(job, plan, refs)
    for ref in refs:
        if ref.key in manifests:
            progress.advance(manifests[ref.key])
    pending = [ref for ref in refs if ref.key not in manifests]
    slots = model_slots(job, runner, gpus)
    units = work_units(pending, job.dispatch.unit_shards, slots, auto_unit_shards(job))
    window = job.dispatch.units_in_flight(slots)
    get_run_logger().info(
        "%d shard(s) already done; %d to restore in %d work unit(s), %d in flight at most",
        len(manifests),
        len(pending),
        len(units),
        window,
    )
    with watching(progress.on_step):  # sampler steps of the shards restored in this process
        restored, failed = _dispatch(job, plan, units, window, progress)
    manifests.update(restored)
    outcome = quote({"manifests": manifests, "failed": failed})  # returned as is: Prefect need not walk every manifest
    return Failed(message=failed_message(failed, len(refs)), data=outcome) if failed else outcome


@flow(name="run", flow_run_name=job_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def run(job: Job, shards: list[str] | None = None, force: bool = False, credentials_block: str | None = None) -> Any:
    """Restore a dataset: every shard not yet done (or only ``shards``), then metrics and the report.
    ``force``: write into an output that is not empty although diffpir did not make it.
    ``credentials_block``: name of a Prefect Secret block with the storage credentials (``flows.credentials``);
    without it they come from the worker's environment.
    A comparison (``variants``/``tasks``) runs ``run-shards`` once per cell on the shared measurements, then one
    table of all of them; a tuning job (``tune``) runs one ``tune-trial`` sub-flow per trial (``flows.tune``)."""

    def restore(cell_job: Job, plan: JobPlan, label: str) -> tuple[list[ShardRef], dict[str, Any]]:
        out = DatasetStore.open(plan.output_store, job.storage_options)
        selection = ShardSelection.of(out, shards)
        refs = selection.resolve(out)  # now: the store may be gone when the shards are
        state = run_shards.with_options(task_runner=build_task_runner(cell_job, plan.threads))(
            job=cell_job, plan=plan, selection=selection, label=label, return_state=True
        )
        outcome = state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            raise outcome
        return refs, outcome.unquote()

    with changed_environment(block_credentials(credentials_block)):
        if job.tune is not None:
            return run_tuning(job, force)
        return run_cells(job, restore, force)
