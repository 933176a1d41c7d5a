"""Completion records: a shard's output data, then one small object saying it is done, named by its identity.

A record lives at ``records/<H>x<W>/<array>/<shard:06d>/<name>.json``, where ``<name>`` is :func:`record_name` of
the identity the writer gave it (job, prior, code, the shard's input rows, its per-image files; whatever the caller
decides makes a result count). So "is this shard done for this identity?" is "does this object exist?": one listing
per array and size group on object stores, one ``stat`` per shard on a local disk, no record read. Every record of a
shard is deleted before its data is rewritten, and a record is written only after its data, re-read, has the
checksum the writer computed; so an existing record always describes the data beside it, unless that data was
altered behind the store's back. That is caught where data is read (:meth:`ShardRecords.read_verified`) and by
``diffpir verify``, not by the existence check.
"""

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from diffpir_core.io.listing import listed, object_infos
from diffpir_core.io.uris import join, put_atomic, redact_uri

RECORD_SUFFIX = ".json"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
METADATA_ARRAYS = ("ids", "sources", "sha256", "pixel_sha256", "source_shape", "source_mode")
_RESERVED = frozenset(METADATA_ARRAYS)


class StoreError(RuntimeError):
    """The store is missing, incomplete or does not have the expected layout."""


class DamagedShard(StoreError):
    """A done shard whose data no longer has its record's checksum (or cannot be read): altered behind the store's
    back. ``shard`` is its key, ``array`` the array."""

    def __init__(self, message: str, shard: str, array: str):
        super().__init__(message)
        self.shard = shard
        self.array = array


class ShardRef(BaseModel):
    """One shard of one size group: images ``start:stop`` of the group's arrays. Small and picklable."""

    model_config = ConfigDict(frozen=True)
    group: str
    index: int
    start: int
    stop: int
    ids: tuple[str, ...]

    @property
    def size(self) -> int:
        """Number of images in the shard (the last shard of a group may be short)."""
        return self.stop - self.start

    @property
    def key(self) -> str:
        """A stable, human-readable name, e.g. ``256x256/000003`` (for logs and cache keys)."""
        return f"{self.group}/{self.index:06d}"


class ShardRecord(BaseModel):
    """The completion record of one shard of one array, written only after the data is in the store."""

    status: Literal["done"] = "done"
    array: str
    group: str
    shard: int
    start: int
    stop: int
    checksum: str
    identity: dict[str, str] = Field(default_factory=dict, description="what makes the record count (its name)")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds, by phase")
    metrics: dict[str, Any] = Field(default_factory=dict, description="per-shard metrics (JSON values)")
    written_at: str = ""

    @property
    def quarantined(self) -> dict[str, str]:
        """Images of the shard that were not restored, with why (id -> reason): restore mode's per-image kernel, mask
        or σ that is missing, unreadable or unfit. Their rows of the data are empty."""
        return dict(self.metrics.get("quarantined") or {})


@dataclass(frozen=True)
class RecordStamp:
    """An existing record as a listing shows it: its object name and when it was written (UTC, ISO 8601)."""

    name: str
    written_at: str


def record_name(identity: Mapping[str, str]) -> str:
    """The object name of the record for ``identity``: the first 32 hex digits of the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(dict(identity), sort_keys=True).encode()).hexdigest()[:32] + RECORD_SUFFIX


def shard_checksum(data: np.ndarray) -> str:
    """``sha256:<hex>`` over dtype, shape and C-order bytes: identifies exactly the data of one shard."""
    array = np.ascontiguousarray(data)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes() if array.dtype.kind not in "OTU" else json.dumps(array.tolist()).encode())
    return "sha256:" + digest.hexdigest()


def check_name(name: str) -> None:
    """Refuse an array name that is not a plain (nested) name or is one of the provenance columns."""
    if not _NAME.match(name) or name in _RESERVED:
        raise ValueError(
            f"invalid array name {name!r}: use letters, digits, '_', '-', '.', with '/' to nest; "
            f"{sorted(_RESERVED)} are reserved"
        )


class ShardRecords:
    """The record half of :class:`~diffpir_core.io.dataset.DatasetStore`: write a shard's data and its record, find
    which shards have the record an identity names, read data verified against its record, forget records.
    The store provides ``uri``, ``_fs``, ``_array``, ``_check_ids``, ``read_array`` and ``_require_writable``."""

    uri: str
    _fs: tuple[Any, str]

    def write_shard_output(self, ref: ShardRef, name: str, data: np.ndarray) -> str:
        """Write one whole shard of array ``name`` and return its checksum (for :meth:`write_record`).

        Every earlier record of the shard is removed first, so a record never describes other data. Only one
        process may write a given shard at a time (the task grid equals the shard grid).
        """
        self._require_writable()
        array = self._array(ref.group, name)
        expected = (ref.size, *array.shape[1:])
        if data.shape != expected or data.dtype != array.dtype:
            raise ValueError(
                f"shard {ref.key} of {name!r} needs an array of shape {expected} and dtype {array.dtype}, "
                f"got {data.shape} {data.dtype}; convert it explicitly before writing"
            )
        self.delete_record(ref, name)
        array[ref.start : ref.stop] = data
        return shard_checksum(data)

    def write_record(
        self,
        ref: ShardRef,
        name: str,
        *,
        checksum: str,
        identity: Mapping[str, str],
        timings: Mapping[str, float] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> ShardRecord:
        """Record that shard ``ref`` of ``name`` is complete for ``identity``, after re-reading it to confirm
        ``checksum`` (what :meth:`write_shard_output` returned). If the store holds different data (another writer,
        a lost write), or its rows no longer hold ``ref.ids`` (re-aligned meanwhile), this raises instead of writing.
        The record is one atomic object named :func:`record_name` of ``identity``."""
        self._require_writable()
        self._check_ids(ref)
        stored = shard_checksum(self.read_array(ref, name))
        if stored != checksum:
            raise StoreError(
                f"shard {ref.key} of {name!r} holds data with checksum {stored}, not the {checksum} that was written; "
                "another writer touched this shard; write it again (one writer per shard)"
            )
        record = ShardRecord(
            array=name,
            group=ref.group,
            shard=ref.index,
            start=ref.start,
            stop=ref.stop,
            checksum=checksum,
            identity=dict(identity),
            timings=dict(timings or {}),
            metrics=dict(metrics or {}),
            written_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        fs, folder = self._shard_folder(ref, name)
        put_atomic(fs, join(folder, record_name(identity)), record.model_dump_json(indent=1).encode())
        return record

    def delete_record(self, ref: ShardRef, name: str) -> None:
        """Remove every record of the shard (it then counts as not done, for any identity)."""
        fs, folder = self._shard_folder(ref, name)
        try:
            fs.rm(folder, recursive=True)
        except FileNotFoundError:
            pass

    def record_matches(self, ref: ShardRef, name: str, identity: Mapping[str, str]) -> bool:
        """True when the shard has the record ``identity`` names (:meth:`done_records` for one shard)."""
        return ref.key in self.done_records([ref], name, {ref.key: identity})

    def done_records(
        self, refs: Sequence[ShardRef], name: str, identities: Mapping[str, Mapping[str, str]]
    ) -> dict[str, RecordStamp]:
        """The shards of ``refs`` that have the record their identity (``identities`` by shard key; shards without
        one are not done) names, with when it was written: per size group one listing of the array's records on an
        object store, one ``stat`` per shard on a local disk. No record and no data is read."""
        check_name(name)
        fs, base = self._fs
        found: dict[str, RecordStamp] = {}
        for group in dict.fromkeys(ref.group for ref in refs):
            wanted = {
                f"{ref.index:06d}/{record_name(identities[ref.key])}": ref
                for ref in refs
                if ref.group == group and ref.key in identities
            }
            for path, info in object_infos(fs, join(base, f"records/{group}/{name}"), wanted).items():
                found[wanted[path].key] = RecordStamp(path.rsplit("/", 1)[1], _written_at(info))
        return found

    def read_record(self, ref: ShardRef, name: str, identity: Mapping[str, str] | None = None) -> ShardRecord | None:
        """The record ``identity`` names, or (no identity) the shard's newest record; None when there is none."""
        fs, folder = self._shard_folder(ref, name)
        if identity is not None:
            return _load(fs, join(folder, record_name(identity)))
        try:
            names = [path for path in fs.ls(folder, detail=False, refresh=True) if path.endswith(RECORD_SUFFIX)]
        except FileNotFoundError:
            return None
        records = [record for path in names if (record := _load(fs, path)) is not None]
        return max(records, key=lambda record: record.written_at, default=None)

    def read_records(self, refs: Sequence[ShardRef], name: str, threads: int = 8) -> dict[str, ShardRecord]:
        """The newest record of each of many shards (one listing per size group, the records read by ``threads``
        threads); shards without one are left out."""
        fs, base = self._fs
        paths: list[tuple[str, str]] = []
        for group in dict.fromkeys(ref.group for ref in refs):
            folders = self.record_folders(group, name)
            for ref in refs:
                if ref.group == group:
                    folder = join(base, f"records/{group}/{name}/{ref.index:06d}")
                    paths += [(ref.key, join(folder, file)) for file in folders.get(ref.index, [])]
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="record-read") as pool:
            loaded = pool.map(lambda item: _load(fs, item[1]), paths)
            newest: dict[str, ShardRecord] = {}
            for (key, _), record in zip(paths, loaded, strict=True):
                if record is not None and (key not in newest or record.written_at > newest[key].written_at):
                    newest[key] = record
            return newest

    def read_verified(
        self, ref: ShardRef, name: str, record: ShardRecord | None = None
    ) -> tuple[np.ndarray, ShardRecord]:
        """The shard's data of ``name`` with its record (given, or the newest), the data checked against the record's
        checksum: a :class:`DamagedShard` naming the shard when it differs or cannot be read, a :class:`StoreError`
        when the shard has no record."""
        record = record or self.read_record(ref, name)
        if record is None:
            raise StoreError(
                f"shard {ref.key} of {name!r} in {redact_uri(self.uri)} is not done (no record); run the job"
            )
        try:
            data = self.read_array(ref, name)
            found = shard_checksum(data)
        except Exception as err:  # a torn or corrupt shard object
            found = f"unreadable ({type(err).__name__}: {err})"
        if found != record.checksum:
            raise DamagedShard(
                f"shard {ref.key} of {name!r} in {redact_uri(self.uri)} is damaged: its data is {found[:40]}, not the "
                f"{record.checksum[:40]} its record was written for (changed behind the store's back)",
                ref.key,
                name,
            )
        return data, record

    def _shard_folder(self, ref: ShardRef, name: str) -> tuple[Any, str]:
        check_name(name)
        fs, base = self._fs
        return fs, join(base, f"records/{ref.group}/{name}/{ref.index:06d}")

    def record_folders(self, group: str, name: str) -> dict[int, list[str]]:
        """Record object names by shard index of array ``name`` in ``group`` (one listing; ``diffpir verify``)."""
        fs, base = self._fs
        folders: dict[int, list[str]] = {}
        for path in listed(fs, join(base, f"records/{group}/{name}")):
            shard, _, file = path.partition("/")
            if shard.isdigit() and file.endswith(RECORD_SUFFIX):
                folders.setdefault(int(shard), []).append(file)
        return folders


def _written_at(info: Mapping[str, Any]) -> str:
    """When an object was last written, as ISO 8601 UTC, from its fsspec info (mtime or LastModified)."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(stamp, datetime):
        return stamp.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(float(stamp), UTC).isoformat(timespec="seconds")
    return str(stamp or "")


def _load(fs: Any, path: str) -> ShardRecord | None:
    try:
        return ShardRecord.model_validate_json(fs.cat_file(path))
    except FileNotFoundError:
        return None
