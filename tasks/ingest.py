"""Prefect tasks that get a job's stores ready: ``ingest`` (claim the output, ingest or refresh the input) and ``plan``
(one cell's stores, arrays and run.json). Both are idempotent; see :mod:`diffpir_core.runs.prepare`."""

from typing import Any

from prefect import get_run_logger, task

from diffpir_core.runs import prepare
from diffpir_core.runs.job import Job
from diffpir_flow.tasks.retries import retry_transient


@task(name="ingest", retry_condition_fn=retry_transient)
def ingest_input(job: Job, force: bool = False) -> dict[str, Any]:
    """:func:`~diffpir_core.runs.prepare.ingest_input`, logging to the task run."""
    return prepare.ingest_input(job, force, get_run_logger())


plan_job = task(name="plan", retry_condition_fn=retry_transient)(prepare.plan_job)
