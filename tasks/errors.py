"""Which failures are worth a retry: storage and network hiccups and CUDA memory, not bad input or config.

Prefect calls :func:`retry_transient` before each retry; a permanent error (a ``ValueError`` from a bad
kernel file, a ``StoreError`` from a damaged store, a checkpoint that does not load) fails the shard
at once, with its message, instead of burning retries and delay.
"""

from typing import Any, TypeVar

import torch
from prefect import Task
from prefect.tasks import exponential_backoff

from diffpir_core.io import StoreError
from diffpir_core.job import Job

T = TypeVar("T", bound=Task)

_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass on their own: I/O and network errors, timeouts, CUDA out of memory."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, (StoreError, *_PERMANENT_OS_ERRORS)):
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return type(exc).__module__.split(".")[0] in {"botocore", "aiobotocore", "aiohttp", "urllib3"}


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def with_job_retries(task: T, job: Job) -> T:
    """``task`` retrying transient errors as the job says (``retries``, ``retry_delay_s`` doubling, 20 % jitter)."""
    return task.with_options(
        retries=job.retries, retry_delay_seconds=exponential_backoff(job.retry_delay_s), retry_jitter_factor=0.2
    )


def describe(exc: BaseException) -> str:
    """``ValueError: message`` with the kind of failure, for status files and the UI."""
    kind = "transient" if is_transient(exc) else "permanent"
    return f"{type(exc).__name__} ({kind}): {exc}"
