"""Prefect retries of the project's tasks: transient failures only, as often and as spaced as the job says."""

from typing import Any, TypeVar

from prefect import Task
from prefect.tasks import exponential_backoff

from diffpir_core.runs.failures import is_transient
from diffpir_core.runs.job import Job

T = TypeVar("T", bound=Task)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def with_job_retries(task: T, job: Job) -> T:
    """``task`` retrying transient errors as the job says (``retries``, ``retry_delay_s`` doubling, 20 % jitter)."""
    return task.with_options(
        retries=job.retries, retry_delay_seconds=exponential_backoff(job.retry_delay_s), retry_jitter_factor=0.2
    )
