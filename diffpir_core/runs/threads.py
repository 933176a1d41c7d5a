"""CPU threads of the sampler: how many torch threads a work unit uses, and the allocator setting that keeps
a Dask worker as fast as the main process.

Two things made torch slower in Dask workers than in the main process:

* **Threads.** A Dask nanny spawns each worker with ``OMP_NUM_THREADS=1`` (``distributed.nanny.pre-spawn-environ``),
  so torch starts with one thread there, while the main process uses every core. torch's thread count is also
  per OS thread under OpenMP: ``torch.set_num_threads`` in one thread does not change a pool thread that has
  already run a parallel op, so the count is applied in the thread that runs the sampler (:func:`apply_threads`).
* **The allocator.** The same setting sets ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any glibc malloc threshold
  turns off glibc's dynamic mmap threshold, so every buffer over 128 KiB (each UNet activation) is ``mmap``-ed
  and unmapped again, and the kernel zero-fills fresh pages at every forward. :func:`restore_malloc_thresholds`
  sets the thresholds that the dynamic mode reaches by itself (mmap 32 MiB, trim 64 MiB).

The default count leaves out the cores other processes keep busy (:func:`free_cores`): on a loaded 2-core
machine two OpenMP threads that keep losing their core to another process wait for each other at every
barrier, and a UNet forward ran 3-5x slower than with one thread (bench/threads.py). That choice depends on the
load, and the count changes float rounding, so it is made once per job (:func:`planned_threads`, recorded in the
job's ``run.json``) and a resumed job uses it again.

No Prefect here: the flows pass the resolved number; this module only reads the machine and sets torch.
"""

import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Mapping

import psutil
import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where the dynamic mode ends up
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD  # the dynamic mode keeps trim = 2 x mmap threshold


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def env_threads(environ: Mapping[str, str] = os.environ) -> int | None:
    """``OMP_NUM_THREADS`` as a positive int, or None when it is unset or not a positive whole number."""
    raw = environ.get("OMP_NUM_THREADS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def free_cores(window_s: float = 0.5) -> float:
    """Cores not kept busy by other processes: this machine's cores minus the CPU time that processes outside
    this one and its children used during ``window_s`` seconds (sampled now, so it is the load at the start)."""
    own = psutil.Process()

    def busy() -> tuple[float, float]:
        machine = psutil.cpu_times()
        total = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        mine = 0.0
        for proc in [own, *own.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # a child that exited meanwhile
                continue
            mine += times.user + times.system
        return total, mine

    total_0, mine_0, start = *busy(), time.monotonic()
    time.sleep(window_s)
    total_1, mine_1 = busy()
    others = max(0.0, (total_1 - total_0) - (mine_1 - mine_0)) / max(1e-3, time.monotonic() - start)
    return max(0.0, machine_cores() - others)


def split_cores(concurrent_tasks: int, cores: float | None = None) -> int:
    """Threads per work unit when ``concurrent_tasks`` tasks share ``cores`` (default: :func:`free_cores`), at least
    1."""
    available = free_cores() if cores is None else cores
    return max(1, round(available) // max(1, concurrent_tasks))


def default_threads(concurrent_tasks: int, environ: Mapping[str, str] = os.environ) -> int:
    """``OMP_NUM_THREADS`` when set, else the free cores split across ``concurrent_tasks`` shard tasks."""
    return env_threads(environ) or split_cores(concurrent_tasks)


def planned_threads(
    job_threads: int | None, recorded: int | None, local_tasks: int | None, environ: Mapping[str, str] = os.environ
) -> int | None:
    """The threads per work unit a job runs with, fixed once per job so that a resumed job restores with the count its
    first run used (another count may change results by float rounding): the job's ``threads`` when set, else the
    count ``recorded`` by an earlier run of the job, else :func:`default_threads` over ``local_tasks`` concurrent
    tasks of the local runner. None on Dask without either (``local_tasks`` None): each worker host splits its own
    free cores (:mod:`diffpir_flow.flows.dask_threads`), unless ``OMP_NUM_THREADS`` is set here."""
    if job_threads or recorded:
        return job_threads or recorded
    if local_tasks is None:
        return env_threads(environ)
    return default_threads(local_tasks, environ)


def apply_threads(threads: int) -> None:
    """Make torch use ``threads`` intra-op threads in the calling OS thread (and inter-op threads where torch
    still allows setting them: only before the first inter-op work of the process)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except (
            RuntimeError
        ):  # torch allows this once, before any inter-op parallel work; the intra-op count is what matters
            pass


def restore_malloc_thresholds(environ: Mapping[str, str] = os.environ) -> bool:
    """Under glibc with ``MALLOC_TRIM_THRESHOLD_`` set (Dask's nanny sets 65536): set the mmap and trim thresholds
    glibc's dynamic mode would reach, so tensors reuse heap memory instead of fresh zero-filled pages.
    Returns whether it changed anything."""
    if "MALLOC_TRIM_THRESHOLD_" not in environ or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)  # glibc has it; other C libraries may not
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
