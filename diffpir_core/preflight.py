"""Checks a job can pass before any work starts (no model run, no Prefect): each failure names the job field
and the fix, so that ``diffpir run`` stops in one line instead of failing shard after shard.

:func:`preflight` runs them all and returns the problems found (``[]`` = nothing to report):

* ``device``: ``cuda``/``cuda:N`` requested where this process sees no such CUDA device (local runner only: with
  Dask the workers' devices count, and they are checked by the shard tasks);
* ``runner.address``: a Dask scheduler answers a short TCP connect;
* ``task``: kernel and mask files exist and read (their bytes are what identifies the job);
* ``input``/``output`` on object stores: the bucket exists and the credentials work (one cheap call each);
* ``output`` on local disk: the nearest existing folder is writable.
"""

import os
import socket
from typing import Any
from urllib.parse import urlsplit

from diffpir_core.io.uris import filesystem, is_local, local_path, redact_uri
from diffpir_core.job import DaskRunner, Job


def check_device(job: Job) -> str | None:
    """``device``: the CUDA device a local job asks for exists here."""
    if isinstance(job.runner, DaskRunner) or not job.device.startswith("cuda"):
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(job.device.split(":", 1)[1]) if ":" in job.device else 0
    if index < count:
        return None
    seen = f"{count} CUDA device(s)" if count else "no CUDA device"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    return f"device: {job.device!r} was requested but this machine sees {seen} (CUDA_VISIBLE_DEVICES={visible}); use device: auto or cpu"


def check_dask_address(job: Job, timeout_s: float = 3.0) -> str | None:
    """``runner.address``: a scheduler answers a TCP connect within ``timeout_s``."""
    if not isinstance(job.runner, DaskRunner) or not job.runner.address:
        return None
    parts = urlsplit(job.runner.address)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname:
        return None
    try:
        socket.create_connection((parts.hostname, parts.port or 8786), timeout=timeout_s).close()
    except OSError as err:
        return (
            f"runner.address: no Dask scheduler answers at {job.runner.address} ({err}); start one "
            "(`dask scheduler`) or fix the address, or use runner: {kind: local}"
        )
    return None


def check_task_files(job: Job) -> str | None:
    """``task``: the kernel/mask files the task names exist and read (the job hash reads their bytes)."""
    try:
        job.task_identity()
    except FileNotFoundError as err:
        return f"task: a kernel/mask file does not exist ({err}); fix the path in task.kernel / task.mask"
    except (OSError, ValueError) as err:
        return f"task: a kernel/mask file cannot be read ({type(err).__name__}: {err}); fix the file or the path"
    return None


def _bucket_problem(field: str, uri: str, storage_options: dict[str, Any]) -> str | None:
    scheme = uri.split("://", 1)[0]
    if scheme not in ("s3", "s3a", "gs", "gcs", "az", "abfs"):
        return None
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    try:
        fs, _ = filesystem(f"{scheme}://{bucket}", storage_options)
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        return f"{field}: bucket {bucket!r} does not exist ({redact_uri(uri)}); create it or fix the {field} URI"
    except PermissionError as err:
        return f"{field}: access to bucket {bucket!r} is denied ({err}); check the credentials (environment or storage_options)"
    except Exception as err:  # any other failure of the one call is the answer
        return f"{field}: cannot reach bucket {bucket!r} ({type(err).__name__}: {err}); check storage_options (endpoint_url, credentials)"
    return None


def check_storage(job: Job) -> list[str]:
    """``input``/``output``: buckets exist and answer with these credentials; a local output can be written."""
    problems = [p for field in ("input", "output") if (p := _bucket_problem(field, getattr(job, field), job.storage_options))]
    if is_local(job.output):
        path = local_path(job.output)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"output: {job.output} cannot be written ({path} is not a writable folder); choose another output")
    return problems


def preflight(job: Job) -> list[str]:
    """Every problem the checks above find, one line each (field first); [] when the job may start."""
    found = [check_device(job), check_dask_address(job), check_task_files(job), *check_storage(job)]
    return [problem for problem in found if problem]
