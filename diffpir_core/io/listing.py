"""What exists below a folder, with few requests: on object stores one listing (a request per 1,000 objects, each
with its size and time stamp), on a local disk one ``stat`` per name asked about."""

import os
from collections.abc import Iterable, Mapping
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem


def listed(fs: AbstractFileSystem, folder: str) -> dict[str, Mapping[str, Any]]:
    """fsspec info of every object below ``folder``, by path relative to it, from a fresh listing ({} when absent)."""
    fs.invalidate_cache(folder)
    try:
        found = fs.find(folder, detail=True)
    except FileNotFoundError:
        return {}
    prefix = fs._strip_protocol(folder).rstrip("/") + "/"
    return {path[len(prefix) :]: info for path, info in found.items() if path.startswith(prefix)}


def object_infos(fs: AbstractFileSystem, folder: str, names: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    """Info of those objects ``names`` (paths relative to ``folder``) that exist, fresh: on an object store from one
    listing of the folder (a request per 1,000 objects instead of one per object); on a local disk by a ``stat`` per
    name (walking the folders costs more), ``size`` and ``mtime`` as ``LocalFileSystem.info`` gives them."""
    if not isinstance(fs, LocalFileSystem):
        wanted = set(names)
        return {name: info for name, info in listed(fs, folder).items() if name in wanted}
    found: dict[str, Mapping[str, Any]] = {}
    prefix = folder.rstrip("/") + "/"
    for name in names:
        try:
            stat = os.stat(prefix + name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        found[name] = {"type": "file", "size": stat.st_size, "mtime": stat.st_mtime}
    return found
