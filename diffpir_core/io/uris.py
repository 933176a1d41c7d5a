"""Filesystem plumbing shared by the data layer: fsspec filesystems, Zarr stores, atomic writes.

Every location is an fsspec URL (a local path, ``file://``, ``s3://``, ``memory://``). Credentials travel only in
``storage_options`` (or the environment, for s3fs) and never end up in anything we write: :func:`redact_uri` strips
``user:password@`` from URLs before they are recorded.
"""

import os
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
import zarr
from fsspec import AbstractFileSystem
from zarr.storage import FsspecStore, LocalStore

StorageOptions = dict[str, Any]


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (``file://`` removed, ``~`` expanded, made absolute)."""
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return os.path.abspath(os.path.expanduser(path))


def filesystem(uri: str, storage_options: StorageOptions | None = None) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it (no trailing slash)."""
    if is_local(uri):
        return fsspec.filesystem("file"), local_path(uri)
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path.rstrip("/")


def zarr_store(uri: str, storage_options: StorageOptions | None = None, *, read_only: bool) -> zarr.abc.store.Store:
    """A Zarr store for ``uri``: a ``LocalStore`` for local paths, an ``FsspecStore`` for everything else."""
    if is_local(uri):
        return LocalStore(local_path(uri), read_only=read_only)
    return FsspecStore.from_url(uri, storage_options=dict(storage_options or {}), read_only=read_only)


def redact_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` part, safe to log and to store in attributes."""
    if is_local(uri):
        return uri
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def join(base: str, key: str) -> str:
    """``base/key`` for filesystem paths and URLs alike."""
    return f"{base.rstrip('/')}/{key.lstrip('/')}"


def put_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old object or the whole new one.

    Object stores (S3) replace an object in one PUT; a local file is written under a temporary name and renamed.
    """
    if "file" not in fs.protocol:
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
