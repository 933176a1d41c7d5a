"""The prior, loaded once per worker process and shared by every shard task that runs there.

Loading a prior (hundreds of MB for the official checkpoints) costs seconds; a worker restores many
shards, so the UNet is cached at module level, keyed by (file, sha256, device, dtype). The file's
sha256 is known without loading the network (:func:`prior_sha256`), so finished shards are
recognised and skipped before any model is loaded.

The process's settings (:func:`configure_process`, called by the flow before it dispatches and by the Dask worker
plugin) are its torch thread count, applied again in every thread that asks for the prior (under OpenMP a pool thread
keeps the count it first ran with), and its model slots: the local runner starts more work units than the process has
slots, so that the next unit's task start and first read happen while the current one computes; a unit holds a slot
(:func:`model_slot`) only while the model runs, so no more units than slots compute at once.
"""

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

from diffpir_core.models import Prior, load_prior, prior_path
from diffpir_core.models.files import sha256_file
from diffpir_core.runs.job import Job
from diffpir_core.runs.options import DaskRunner
from diffpir_core.runs.threads import apply_threads, default_threads

_PRIORS: dict[tuple[str, str, str, str], Prior] = {}
_DIGESTS: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()
_LOADS = 0
_THREADS: int | None = None
_SLOTS: threading.BoundedSemaphore | None = None


def configure_process(job: Job, threads: int | None = None) -> int:
    """Set this process's torch threads and model slots for ``job``'s shards; returns the threads. Threads: ``threads``
    (the plan's), else the job's, else ``OMP_NUM_THREADS``, else the free cores split over the local runner's
    ``max_workers``; slots: the local runner's ``max_workers``, none on Dask (a worker's threads are its slots)."""
    global _THREADS, _SLOTS
    local = not isinstance(job.runner, DaskRunner)
    _THREADS = threads or job.threads or default_threads(job.runner.max_workers if local else 1)
    apply_threads(_THREADS)
    _SLOTS = threading.BoundedSemaphore(job.runner.max_workers) if local else None
    return _THREADS


def shard_threads() -> int | None:
    """The threads set by :func:`configure_process` in this process (None: torch's own default)."""
    return _THREADS


@contextlib.contextmanager
def model_slot() -> Iterator[None]:
    """Hold one of this process's model slots (wait for one if all are taken) while the model runs."""
    slots = _SLOTS
    if slots is None:
        yield
        return
    with slots:
        yield


def prior_sha256(name_or_path: str) -> str:
    """sha256 of the prior's file, cached per (path, size, mtime); raises FileNotFoundError if it is absent."""
    path = prior_path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prior {name_or_path!r}: {path} does not exist; download it with `diffpir models download "
            f"{name_or_path}`, or set job.prior to a local .safetensors/.pt file"
        )
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key not in _DIGESTS:
            _DIGESTS[key] = sha256_file(path)
        return _DIGESTS[key]


def get_prior(name_or_path: str, sha256: str, device: str, dtype: torch.dtype = torch.float32) -> Prior:
    """The loaded prior for this process (loaded on first use, with the calling thread set to the process's
    threads); refuses a file whose sha256 changed."""
    global _LOADS
    if _THREADS is not None:
        apply_threads(_THREADS)  # this thread is about to run the prior
    key = (str(prior_path(name_or_path)), sha256, device, str(dtype))
    with _LOCK:
        prior = _PRIORS.get(key)
        if prior is None:
            prior = load_prior(name_or_path, device=device, dtype=dtype)
            if prior.sha256 != sha256:
                raise RuntimeError(
                    f"prior {name_or_path!r} changed while the job ran (sha256 {prior.sha256[:12]}..., the job "
                    f"planned with {sha256[:12]}...); run the job again to restore with the new file"
                )
            _PRIORS[key] = prior
            _LOADS += 1
        return prior


def prior_loads() -> int:
    """How many priors this process has loaded (a skipped shard must not load one)."""
    return _LOADS


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; explicit CUDA devices must exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was requested but this process sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use device: auto or cpu"
        )
    return device
