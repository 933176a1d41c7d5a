"""Output locations a job owns: a marker says "diffpir writes here", and nothing else is written over.

A job's output (a folder or an object-store prefix) holds :data:`MARKER`. :func:`claim_output` writes it into a
missing or empty location, accepts a location that has it, and refuses with :class:`OutputRefused` a non-empty
location without it (someone else's files; ``force=True`` adopts it) and any location inside the job's input
(the job would read its own outputs back as input images; no override).
"""

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from diffpir_core import __version__
from diffpir_core.io.uris import StorageOptions, filesystem, is_local, join, local_path, put_atomic, redact_uri

MARKER = "diffpir-output.json"
MARKER_SCHEMA = 1


class OutputRefused(ValueError):
    """The job may not write into this output location; the message says why and what to do."""


def is_inside(inner: str, outer: str, storage_options: StorageOptions | None = None) -> bool:
    """True when location ``inner`` is ``outer`` or lies below it (same filesystem; local paths with links
    resolved)."""
    if is_local(inner) != is_local(outer):
        return False
    if is_local(inner):
        a, b = os.path.realpath(local_path(inner)), os.path.realpath(local_path(outer))
    else:
        (fs_a, a), (fs_b, b) = filesystem(inner, storage_options), filesystem(outer, storage_options)
        if fs_a.protocol != fs_b.protocol:
            return False
    return a == b or a.startswith(b.rstrip("/") + "/")


def is_ours(output: str, storage_options: StorageOptions | None = None) -> bool:
    """True when ``output`` holds a diffpir ownership marker."""
    fs, base = filesystem(output, storage_options)
    try:
        marker = json.loads(fs.cat_file(join(base, MARKER)))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    return isinstance(marker, dict) and "diffpir_output" in marker


def claim_output(
    output: str, input_uri: str, storage_options: StorageOptions | None = None, *, force: bool = False
) -> None:
    """Make sure a job may write into ``output`` and mark it as diffpir's; :class:`OutputRefused` if it may not."""
    if is_inside(output, input_uri, storage_options):
        raise OutputRefused(
            f"output {redact_uri(output)} is inside the input {redact_uri(input_uri)}: the job would read its own "
            "results back as input images; choose an output outside the input folder"
        )
    with output_lock(output, storage_options):  # two jobs started at once into one new output: one claims it
        _claim(output, storage_options, force)


def _claim(output: str, storage_options: StorageOptions | None, force: bool) -> None:
    if is_ours(output, storage_options):
        return
    fs, base = filesystem(output, storage_options)
    if fs.isfile(base):
        raise OutputRefused(f"output {redact_uri(output)} is a file; choose a folder or prefix for the job's output")
    try:
        entries = fs.ls(base, detail=False) if fs.isdir(base) else []
    except FileNotFoundError:
        entries = []
    if entries and not force:
        raise OutputRefused(
            f"output {redact_uri(output)} is not empty and holds no {MARKER}, so it is not a diffpir output; choose a "
            "new or empty output, or pass --force (flow parameter force=true) to write into it anyway"
        )
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    created_by = {"package": "diffpir-flow", "version": __version__}
    marker = {"diffpir_output": {"schema": MARKER_SCHEMA, "created_at": created_at, "created_by": created_by}}
    put_atomic(fs, join(base, MARKER), json.dumps(marker, indent=1).encode())


@contextlib.contextmanager
def output_lock(output: str, storage_options: StorageOptions | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on a local ``output`` folder (an ``flock`` on the folder, made if missing, shared by
    every
    process on this machine) while inside, so that two jobs started at once into one output neither claim it nor
    ingest the same input at the same time; yields whether it waited for another holder. Object-store outputs and a
    path that is a file are not locked."""
    path = local_path(output) if is_local(output) else None
    if path is None or os.path.isfile(path):
        yield False
        return
    os.makedirs(path, exist_ok=True)
    handle = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(handle)  # closing the last descriptor lets the lock go
