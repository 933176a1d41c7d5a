"""Object fingerprints from listings, and the record index: how a store checks 10,000 shards with a few requests.

A done check needs every shard's record and a proof that its data object is the one that record verified. Read one
by one that is a GET per record and a HEAD per data object. Here, on object stores, it is one listing of the records
and one of the data objects (a listing carries each object's size and ETag), and on a local disk a ``stat`` per
object; plus one object: the record index, a cache of the records' contents keyed by each record object's
fingerprint. An index entry is used only while the record object still has the fingerprint it had when the entry was
made, so a record rewritten since is read again; the index may be stale, missing or written by a concurrent run
without ever changing what counts as done.
"""

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from diffpir_core.io.uris import join, put_atomic

INDEX_OBJECT = "index.json"
INDEX_VERSION = 1
RECORD_NAME = "zarr.json"  # records/<H>x<W>/<name>/<shard:06d>/zarr.json
SETTLE_S = 2.0  # an mtime younger than this is not trusted yet: a rewrite within one clock tick could keep it


def fingerprint_of(info: Mapping[str, Any]) -> str:
    """``<size>:<stamp>`` of an object from its fsspec info (stamp: ETag on object stores, else mtime); empty when
    the filesystem gives no stamp. Rewriting the object changes it."""
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")
    return f"{info.get('size')}:{stamp}" if stamp is not None else ""


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
    name (walking the folders of a sharded array costs more), ``size`` and ``mtime`` as ``LocalFileSystem.info``
    gives them."""
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


def record_stamps(fs: AbstractFileSystem, folder: str, shards: Iterable[int]) -> dict[int, Mapping[str, Any]]:
    """The info of the record objects of ``shards`` that exist in an array's record folder, by shard index."""
    return {int(name[:6]): info for name, info in object_infos(fs, folder, [f"{shard:06d}/{RECORD_NAME}" for shard in shards]).items()}


def read_index(fs: AbstractFileSystem, folder: str) -> dict[int, tuple[str, dict[str, Any]]]:
    """(record fingerprint, record) by shard index from the folder's index; {} when it is absent or unreadable
    (it is only a cache: the records are read instead)."""
    try:
        data = json.loads(fs.cat_file(join(folder, INDEX_OBJECT)))
        if data.get("diffpir_record_index") != INDEX_VERSION:
            return {}
        return {int(shard): (entry["fingerprint"], entry["record"]) for shard, entry in data["records"].items()}
    except Exception:  # absent, torn by a crash of an older writer, or another version: no cache
        return {}


def cached_records(
    fs: AbstractFileSystem, folder: str, shards: Sequence[int], read: Callable[[Iterable[int]], dict[int, dict[str, Any]]]
) -> dict[int, dict[str, Any]]:
    """The current content of the records of ``shards`` in ``folder`` that exist, by shard index: from the index
    where the record object still has the fingerprint the index saw, else through ``read`` (shard indices, in bulk)."""
    return _contents(record_stamps(fs, folder, shards), read_index(fs, folder), read)


def write_index(
    fs: AbstractFileSystem, folder: str, shards: Sequence[int], read: Callable[[Iterable[int]], dict[int, dict[str, Any]]]
) -> int:
    """Bring the folder's index up to date with the records of ``shards`` (all the size group has) as they are now
    (no write when it already is); returns the number of records it holds.

    A record enters only when two listings, before and after its content was read, agree on its fingerprint and a
    time stamp (no ETag) is older than :data:`SETTLE_S`, so that the content and the fingerprint belong together."""
    before = record_stamps(fs, folder, shards)
    index = read_index(fs, folder)
    records = _contents(before, index, read)
    after = record_stamps(fs, folder, shards)
    entries = {}
    for shard, record in records.items():
        fingerprint = fingerprint_of(after.get(shard, {}))
        if fingerprint and fingerprint == fingerprint_of(before[shard]) and _settled(after[shard]):
            entries[shard] = (fingerprint, record)
    if {shard: entry[0] for shard, entry in entries.items()} != {shard: entry[0] for shard, entry in index.items()}:
        body = {f"{shard:06d}": {"fingerprint": fingerprint, "record": record} for shard, (fingerprint, record) in entries.items()}
        put_atomic(fs, join(folder, INDEX_OBJECT), json.dumps({"diffpir_record_index": INDEX_VERSION, "records": body}).encode())
    return len(entries)


def _contents(
    stamps: Mapping[int, Mapping[str, Any]],
    index: Mapping[int, tuple[str, dict[str, Any]]],
    read: Callable[[Iterable[int]], dict[int, dict[str, Any]]],
) -> dict[int, dict[str, Any]]:
    records = {}
    for shard, info in stamps.items():
        entry = index.get(shard)
        if entry is not None and entry[0] and entry[0] == fingerprint_of(info):
            records[shard] = entry[1]
    records.update(read([shard for shard in stamps if shard not in records]))
    return records


def _settled(info: Mapping[str, Any]) -> bool:
    """An ETag names the content itself; a time stamp is trusted once no write in the same tick can follow."""
    if info.get("ETag"):
        return True
    stamp = info.get("mtime") or info.get("created")
    return not isinstance(stamp, int | float) or time.time() - float(stamp) >= SETTLE_S
