"""What exists below a folder, with few requests: on object stores one listing (a request per 1,000 objects, each
with its size and time stamp), on a local disk one ``stat`` per name asked about."""

import os
from collections.abc import Iterable, Mapping
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

FEW = 16  # names asked about at most for which one request each beats a listing of the whole folder


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
    listing of the folder (a request per 1,000 objects instead of one per object) unless there are at most
    :data:`FEW` names (then one request each); on a local disk by a ``stat`` per name (walking the folders costs
    more), ``size`` and ``mtime`` as ``LocalFileSystem.info`` gives them."""
    wanted = list(names)
    prefix = folder.rstrip("/") + "/"
    if not isinstance(fs, LocalFileSystem) and len(wanted) > FEW:
        return {name: info for name, info in listed(fs, folder).items() if name in set(wanted)}
    found: dict[str, Mapping[str, Any]] = {}
    for name in wanted:
        try:
            found[name] = _stat(fs, prefix + name)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def _stat(fs: AbstractFileSystem, path: str) -> Mapping[str, Any]:
    """A fresh ``stat`` of a local file, or the info of one object (a HEAD on object stores)."""
    if isinstance(fs, LocalFileSystem):
        stat = os.stat(path)
        return {"type": "file", "size": stat.st_size, "mtime": stat.st_mtime}
    fs.invalidate_cache(path)
    info = fs.info(path)
    if info.get("type") != "file":
        raise FileNotFoundError(path)
    return info
