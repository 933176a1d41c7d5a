"""Checks a job can pass before any work starts (no model run, no Prefect): each failure names the job field
and the fix, so that ``diffpir run`` stops in one line instead of failing shard after shard.

:func:`preflight` runs them all and returns the problems found (none = the job may start) and notes:

* ``device``: ``cuda``/``cuda:N`` requested where this process sees no such CUDA device (local runner only: with
  Dask the workers' devices count, and they are checked by the shard tasks);
* ``runner.address``: a Dask scheduler answers a short TCP connect;
* ``task``: kernel and mask files exist and read (their bytes are what identifies the job);
* ``input``/``output`` on object stores: the bucket exists and the credentials work (one cheap call each);
* ``output`` on local disk: the nearest existing folder is writable;
* ``input``: the folder or prefix exists; a local one holds images (or is a Zarr store), and per-image kernel or mask
  files (restore mode) cover the first images with files of their size (a note when some would be quarantined);
* ``prior``: the weights file is there (shipped, downloaded, or the path given);
* ``runner.cluster_class``: its module is installed (``dask_cuda`` is a separate package).

``diffpir run --dry-run`` runs the same checks.
"""

import importlib.util
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from diffpir_core.io.decode import IMAGE_EXTENSIONS
from diffpir_core.io.uris import filesystem, is_local, join, local_path, redact_uri
from diffpir_core.models import prior_image_size, prior_path
from diffpir_core.runs.job import Job
from diffpir_core.runs.options import DaskRunner
from diffpir_core.runs.probes import restorations_per_image

INPUT_SAMPLE = 64
"""Images whose per-image kernel/mask files the preflight reads (the run checks every one, and quarantines)."""


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
    return (
        f"device: {job.device!r} was requested but this machine sees {seen} "
        f"(CUDA_VISIBLE_DEVICES={visible}); use device: auto or cpu"
    )


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


_CREDENTIALS_HINT = (
    "set the credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) or in "
    "~/.aws "
    "(`aws configure`); not in the job file (docs/jobs.md)"
)


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
        return f"{field}: access to bucket {bucket!r} is denied ({err}); {_CREDENTIALS_HINT}"
    except Exception as err:  # any other failure of the one call is the answer
        hint = (
            _CREDENTIALS_HINT
            if "credential" in str(err).lower()
            else "check storage_options.endpoint_url and the network"
        )
        return f"{field}: cannot reach bucket {bucket!r} ({type(err).__name__}: {err}); {hint}"
    return None


def check_storage(job: Job) -> list[str]:
    """``input``/``output``: buckets exist and answer with these credentials; a local output can be written."""
    problems = [
        p for field in ("input", "output") if (p := _bucket_problem(field, getattr(job, field), job.storage_options))
    ]
    if is_local(job.output):
        path = local_path(job.output)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
            problems.append(
                f"output: {job.output} cannot be written ({path} is not a writable folder); choose another output"
            )
    return problems


def _local_images(root: str, limit: int) -> dict[str, str]:
    """Up to ``limit`` image files under the local folder ``root``, by the id ingest gives them (path below root)."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found[os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")] = os.path.join(
                    folder, name
                )
                if len(found) >= limit:
                    return found
    return found


def _task_file_reasons(job: Job, images: dict[str, str]) -> dict[str, str]:
    """Restore mode: ``{image id: reason}`` of the images the per-image kernel/mask files would quarantine (read as
    the run reads them)."""
    from PIL import Image

    by_size: dict[tuple[int, int], list[str]] = {}
    for image_id, path in images.items():
        with Image.open(path) as image:
            by_size.setdefault((image.height, image.width), []).append(image_id)
    reasons: dict[str, str] = {}
    for (height, width), ids in by_size.items():
        reasons |= job.task.given(ids, (len(ids), height, width), job.storage_options).quarantined
    return reasons


def inspect_input(job: Job) -> tuple[list[str], list[str]]:
    """``input``: (problems, notes). Problems: the folder/prefix does not exist, a local folder holds no image, the
    per-image task files would quarantine every image checked. Note: they would quarantine some of them."""
    try:
        fs, root = filesystem(job.input, job.storage_options)
        if fs.exists(join(root, "zarr.json")):
            return [], []
        if not fs.isdir(root):
            return [
                f"input: {redact_uri(job.input)} is not a folder, prefix or Zarr store; fix input (a relative path "
                "in a "
                "job file is relative to the file's folder, one given with --set to the current folder)"
            ], []
    except Exception as err:  # the bucket check says why; this one adds nothing
        return (
            [] if not is_local(job.input) else [f"input: cannot read {job.input} ({type(err).__name__}: {err})"]
        ), []
    if not is_local(job.input):
        return [], []
    images = _local_images(local_path(job.input), INPUT_SAMPLE)
    if not images:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        return [
            f"input: no image files ({extensions}) under {job.input}; point input at the folder of your images"
        ], []
    if job.mode != "restore":
        return [], []
    try:
        reasons = _task_file_reasons(job, images)
    except OSError:  # an unreadable image: ingest quarantines it with its reason
        return [], []
    if not reasons:
        return [], []
    field = "task.mask" if hasattr(job.task, "mask") else "task.kernel"
    example = "e.g. {}: {}".format(*next(iter(reasons.items())))
    if len(reasons) == len(images):
        return [
            f"{field}: every one of the {len(images)} image(s) checked would be quarantined, {example}; fix the "
            f"files or {field}"
        ], []
    return [], [f"{field}: {len(reasons)} of the {len(images)} image(s) checked will be quarantined, {example}"]


def restored_sizes(job: Job, limit: int = INPUT_SAMPLE) -> list[tuple[int, int]]:
    """(height, width) the network restores, of up to ``limit`` images of a local input folder ([] otherwise)."""
    from PIL import Image

    if not is_local(job.input) or not os.path.isdir(local_path(job.input)):
        return []
    scale = job.task.output_scale if job.mode == "restore" else 1
    sizes = []
    for path in _local_images(local_path(job.input), limit).values():
        try:
            with Image.open(path) as image:
                sizes.append((image.height * scale, image.width * scale))
        except OSError:  # ingest quarantines it
            continue
    return sizes


def cost_lines(job: Job, sizes: list[tuple[int, int]]) -> list[str]:
    """What the run costs per image, in tile forwards: NFEs × tiles per network call (a photo larger than the prior's
    training size is restored tile by tile, every step)."""
    lines = []
    for run in job.cells():
        if run.job is None:
            continue
        base = run.job.sampler_config().nfes
        nfes = base * restorations_per_image(run.job)  # SURE's probe restores every image a second time
        probe = " (2 restorations: sure)" if nfes > base else ""
        trained = prior_image_size(run.job.prior)
        tiles = [run.job.fit().tiles(height, width, trained) for height, width in sizes] or [1]
        per_image = nfes * sum(tiles) / len(tiles)
        where = f"{run.name} on {run.task}: " if job.is_comparison() else ""
        largest = max(sizes, key=lambda hw: hw[0] * hw[1]) if sizes else None
        shape = f" ({largest[1]}x{largest[0]} restored, {trained}-px prior)" if largest and trained else ""
        lines.append(
            f"cost: {where}{nfes} network calls per image{probe} x {max(tiles)} tile forward(s) each{shape} = about "
            f"{per_image:,.0f} tile forwards per image"
            + (f", {per_image * len(sizes):,.0f} for the {len(sizes)} image(s) checked" if sizes else "")
        )
    return lines


def demo_prior_notice(job: Job, sizes: list[tuple[int, int]]) -> str | None:
    """A one-line notice when the bundled demo prior is to restore images larger than its training size."""
    trained = prior_image_size("demo")
    uses_demo = any(run.job is not None and run.job.prior == "demo" for run in job.cells())
    larger = [hw for hw in sizes if trained and max(hw) > trained]
    if not uses_demo or not larger:
        return None
    height, width = larger[0]
    return (
        f"prior: `demo` is a small {trained}-px demo prior; on {width}x{height} images it restores tile by tile and "
        "gains "
        "little over the baseline. Real priors: `diffpir models` (docs/models.md)"
    )


def check_prior(job: Job) -> list[str]:
    """``prior``: the weights file of every run's prior is there."""
    priors = {run.job.prior for run in job.cells() if run.job is not None} or {job.prior}
    problems = []
    for prior in sorted(priors):
        path = prior_path(prior)
        if not path.is_file():
            fix = f"run `diffpir models download {prior}`" if "/" not in prior and "." not in prior else "fix the path"
            problems.append(f"prior: {prior!r} is not here ({path} does not exist); {fix} (see `diffpir models`)")
    return problems


def check_cluster_class(job: Job) -> str | None:
    """``runner.cluster_class``: the module of the Dask cluster class the run would create is installed."""
    if not isinstance(job.runner, DaskRunner) or not job.runner.cluster_class:
        return None
    module = job.runner.cluster_class.rsplit(".", 1)[0]
    if importlib.util.find_spec(module.split(".")[0]) is not None:
        return None
    package = module.split(".")[0].replace("_", "-")
    return (
        f"runner.cluster_class: {job.runner.cluster_class} needs the {module!r} module, not installed here; "
        f"`pip install {package}`"
    )


def preflight(job: Job) -> tuple[list[str], list[str]]:
    """(every problem the checks above find, notes worth a line), one line each, field first; no problem = the job
    may start."""
    found = [
        check_device(job),
        check_dask_address(job),
        check_task_files(job),
        check_cluster_class(job),
        *check_storage(job),
    ]
    found += check_prior(job)
    notes: list[str] = []
    if not any(problem and problem.startswith("input:") for problem in found):
        problems, notes = inspect_input(job)
        found += problems
    return [problem for problem in found if problem], notes
