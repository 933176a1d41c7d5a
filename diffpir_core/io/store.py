"""The dataset store: a Zarr v3 group of size groups, each holding images and per-image arrays on one shard grid.

Layout (full description in ``docs/store-layout.md``)::

    <store>/                         root group; attributes["diffpir"] = schema version, creation info, ingest options
      groups/<H>x<W>/images          (N, H, W, 3) uint8, chunk = 1 image, shard = shard_size images
      groups/<H>x<W>/ids             (N,) str   image id = key relative to the dataset root
      groups/<H>x<W>/sources         (N,) str   source URI (credentials removed)
      groups/<H>x<W>/sha256          (N,) str   sha256 of the source file's bytes
      groups/<H>x<W>/pixel_sha256    (N,) str   sha256 of the stored pixels (checked on every read of ``images``)
      groups/<H>x<W>/source_shape    (N, 2) int32  (height, width) upright, before the size policy
      groups/<H>x<W>/source_mode     (N,) str   Pillow mode of the source (e.g. "I;16", "P", "RGBA")
      groups/<H>x<W>/<name>          (N, *per_image_shape) extra per-image arrays (y, kernel, mask, seed, restored ...)
      quarantine/{ids,sources,reasons}  (M,) str   files that were not ingested, and why
      records/<H>x<W>/<name>/<shard>  one completion record per written shard (a group whose attributes hold it)

The shard grid is the unit of work: every array of a size group shares it, one writer writes one whole shard, and a
shard counts as done only when its record exists, was written for the ids and contents the rows hold now, *and* its
checksum matches the data in the store.
"""

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field
from zarr.codecs import ZstdCodec

from diffpir_core import __version__
from diffpir_core.io.listing import RECORD_NAME, cached_records, fingerprint_of, object_infos, write_index
from diffpir_core.io.uris import StorageOptions, filesystem, join, put_atomic, redact_uri, zarr_store

SCHEMA_VERSION = 2
IMAGES = "images"
METADATA_ARRAYS = ("ids", "sources", "sha256", "pixel_sha256", "source_shape", "source_mode")
_IDENTITY_ARRAYS = ("ids", "sha256", "pixel_sha256")  # what makes a row the same image
_RESERVED = frozenset(METADATA_ARRAYS)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_COMPRESSOR = ZstdCodec(level=3)
COLUMN_CHUNK_ROWS = 4096


class StoreError(RuntimeError):
    """The store is missing, incomplete or does not have the expected layout."""


class SizeGroup(BaseModel):
    """One size group: all its images are ``height`` x ``width``."""

    model_config = ConfigDict(frozen=True)
    name: str
    height: int
    width: int
    count: int


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
    rows: str = Field("", description="digest of the ids and content hashes of the rows the record was written for")
    data_object: str = Field("", description="the shard's data object, relative to the store")
    fingerprint: str = Field("", description="size and modification stamp (mtime, ETag) of that object once verified")
    identity: dict[str, str] = Field(default_factory=dict, description="job / model / code / config identity")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds, by phase")
    metrics: dict[str, Any] = Field(default_factory=dict, description="per-shard metrics (JSON values)")
    written_at: str = ""

    @property
    def quarantined(self) -> dict[str, str]:
        """Images of the shard that were not restored, with why (id -> reason): restore mode's per-image kernel, mask
        or σ that is missing, unreadable or unfit. Their rows of the data are empty."""
        return dict(self.metrics.get("quarantined") or {})


class QuarantineEntry(BaseModel):
    """A source file that was not ingested."""

    model_config = ConfigDict(frozen=True)
    id: str
    source: str
    reason: str


class ImageMeta(BaseModel):
    """Per-image provenance stored next to the pixels."""

    model_config = ConfigDict(frozen=True)
    id: str
    source: str
    sha256: str
    source_shape: tuple[int, int]
    source_mode: str
    pixel_sha256: str = Field("", description="sha256 of the stored pixels; the store sets it when it writes them")


def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 (hex) of one stored image's bytes, (H, W, 3) ``uint8`` in C order: the ``pixel_sha256`` column."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def shard_checksum(data: np.ndarray) -> str:
    """``sha256:<hex>`` over dtype, shape and C-order bytes: identifies exactly the data of one shard."""
    array = np.ascontiguousarray(data)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes() if array.dtype.kind not in "OTU" else json.dumps(array.tolist()).encode())
    return "sha256:" + digest.hexdigest()


def group_name(height: int, width: int) -> str:
    """The size-group name for images of ``height`` x ``width``."""
    return f"{height}x{width}"


def _restructures(method: Callable[..., Any]) -> Callable[..., Any]:
    """For writers that create, resize or delete arrays: the store's opened arrays are forgotten before and after."""

    @functools.wraps(method)
    def wrapper(self: "DatasetStore", *args: Any, **kwargs: Any) -> Any:
        self._arrays.clear()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._arrays.clear()

    return wrapper


class DatasetStore:
    """A dataset in a Zarr v3 store (local path or fsspec URL). Open with :meth:`open`, make with :meth:`create`.

    Pickles as (uri, storage_options, mode), so Dask/Prefect workers reopen it themselves.
    """

    def __init__(self, uri: str, storage_options: StorageOptions | None, root: zarr.Group, *, writable: bool):
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self._root = root
        self._writable = writable
        self._append_nodes: dict[tuple[int, int], dict[str, zarr.Array]] = {}
        self._arrays: dict[str, zarr.Array] = {}  # opened arrays (each open reads metadata: 2 requests on S3)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.uri, self.storage_options, self._writable))

    def __repr__(self) -> str:
        return f"DatasetStore({redact_uri(self.uri)!r})"

    # ------------------------------------------------------------------ opening and creating
    @classmethod
    def open(cls, uri: str, storage_options: StorageOptions | None = None, *, writable: bool = False) -> "DatasetStore":
        """Open an existing, completely ingested store. ``writable=True`` to add arrays, outputs and records."""
        try:
            root = zarr.open_group(zarr_store(uri, storage_options, read_only=not writable), mode="r+" if writable else "r", zarr_format=3)
        except FileNotFoundError as err:
            raise StoreError(f"no dataset store at {redact_uri(uri)}; create one with `diffpir ingest`") from err
        info = root.attrs.get("diffpir")
        if not isinstance(info, dict) or "schema_version" not in info:
            raise StoreError(f"{redact_uri(uri)} is a Zarr group but not a diffpir dataset store (no 'diffpir' attribute)")
        if info["schema_version"] > SCHEMA_VERSION:
            raise StoreError(
                f"{redact_uri(uri)} has store schema {info['schema_version']}, newer than this code "
                f"({SCHEMA_VERSION}); upgrade diffpir-flow"
            )
        if info["schema_version"] < SCHEMA_VERSION:
            raise StoreError(
                f"{redact_uri(uri)} has store schema {info['schema_version']}, written by an older diffpir-flow without "
                "pixel hashes; ingest its images again (a job re-ingests its own input store by itself)"
            )
        if not info.get("complete", False):
            raise StoreError(f"{redact_uri(uri)} was not completely written (interrupted ingest?); run the ingest again")
        return cls(uri, storage_options, root, writable=writable)

    @classmethod
    def create(
        cls,
        uri: str,
        storage_options: StorageOptions | None = None,
        *,
        shard_size: int,
        attributes: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> "DatasetStore":
        """Create an empty store (marked incomplete until :meth:`mark_complete`). ``attributes`` go into ``diffpir``."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        store = zarr_store(uri, storage_options, read_only=False)
        try:
            root = zarr.open_group(store, mode="w" if overwrite else "w-", zarr_format=3)
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
            raise StoreError(f"{redact_uri(uri)} already exists; pass overwrite=True (--overwrite) to replace it") from err
        info = {
            "schema_version": SCHEMA_VERSION,
            "complete": False,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "created_by": {"package": "diffpir-flow", "version": __version__},
            "shard_size": shard_size,
            **dict(attributes or {}),
        }
        root.attrs["diffpir"] = info
        for name in ("ids", "sources", "reasons"):
            root.create_array(f"quarantine/{name}", shape=(0,), dtype=str, chunks=(1024,))
        root.create_group("groups")
        root.create_group("records")
        return cls(uri, storage_options, root, writable=True)

    @classmethod
    def create_aligned(
        cls,
        uri: str,
        source: "DatasetStore",
        storage_options: StorageOptions | None = None,
        *,
        shard_size: int | None = None,
        overwrite: bool = False,
    ) -> "DatasetStore":
        """A new store with ``source``'s groups, ids and provenance but no images (for outputs elsewhere), on a grid
        of ``shard_size`` images per shard (default: the source's). Keep it aligned with :meth:`align_with`."""
        target = cls.create(
            uri, storage_options, shard_size=shard_size or source.shard_size, attributes={"kind": "aligned"}, overwrite=overwrite
        )
        target.align_with(source)
        return target

    @_restructures
    def align_with(self, source: "DatasetStore") -> None:
        """Make this store's groups and rows those of ``source`` (after ``source`` was re-ingested).

        Provenance columns are copied where they differ, every per-image array is resized to the new row count, and
        groups ``source`` no longer has are deleted. Data and records stay: a record only counts for the ids and
        contents it was written for (:meth:`record_matches`), so rows that changed are simply not done.
        """
        self._require_writable()
        wanted = {group.name: group for group in source.groups()}
        for name in [name for name, _ in self._root["groups"].groups() if name not in wanted]:
            del self._root[f"groups/{name}"]
            del self._root[f"records/{name}"]
        for group in wanted.values():
            path = f"groups/{group.name}"
            node = self._root[path] if path in self._root else self._root.create_group(
                path, attributes={"height": group.height, "width": group.width}
            )
            self._root.require_group(f"records/{group.name}")
            for name in METADATA_ARRAYS:
                src = source._array(group.name, name)
                if name not in node:
                    node.create_array(
                        name, shape=(0, *src.shape[1:]), dtype=src.dtype, chunks=(column_chunk_rows(self.shard_size), *src.shape[1:])
                    )
            for name in self.array_names(group.name):
                array = node[name]
                if array.shape[0] != group.count:
                    array.resize((group.count, *array.shape[1:]))
            for name in METADATA_ARRAYS:
                src, dst = source._array(group.name, name), node[name]
                step = dst.chunks[0] * 64  # bounded memory, whole chunks per write
                for start in range(0, group.count, step):
                    block = src[start : start + step]
                    if not np.array_equal(dst[start : start + step], block):
                        dst[start : start + step] = block
        self.mark_complete(groups=list(wanted))

    # ------------------------------------------------------------------ reading
    @property
    def info(self) -> dict[str, Any]:
        """The ``diffpir`` root attributes (schema version, creation info, ingest options and counts)."""
        return dict(self._root.attrs["diffpir"])

    @property
    def shard_size(self) -> int:
        """Images per shard (the last shard of each group may hold fewer)."""
        return int(self.info["shard_size"])

    def groups(self) -> list[SizeGroup]:
        """The size groups, ordered by (height, width)."""
        result = []
        for name, node in self._root["groups"].groups():
            ids = node["ids"]
            result.append(SizeGroup(name=name, height=node.attrs["height"], width=node.attrs["width"], count=ids.shape[0]))
        return sorted(result, key=lambda g: (g.height, g.width))

    def shards(self, group: str | None = None) -> list[ShardRef]:
        """Every shard in deterministic order (groups by size, then index); only ``group``'s when given."""
        refs = []
        for size_group in self.groups():
            if group is not None and size_group.name != group:
                continue
            ids = self._array(size_group.name, "ids")[:].tolist()
            step = self.shard_size
            for index, start in enumerate(range(0, len(ids), step)):
                stop = min(start + step, len(ids))
                refs.append(ShardRef(group=size_group.name, index=index, start=start, stop=stop, ids=tuple(ids[start:stop])))
        return refs

    def read_images(self, ref: ShardRef) -> np.ndarray:
        """The shard's input images, (n, H, W, 3) ``uint8``, verified (see :meth:`read_array`)."""
        return self.read_array(ref, IMAGES)

    def read_array(self, ref: ShardRef, name: str) -> np.ndarray:
        """Rows ``ref.start:ref.stop`` of the group's array ``name``.

        Reading ``images`` verifies that the rows still hold the shard's ids and that every image's pixels match
        their ``pixel_sha256``: a :class:`StoreError` naming the shard otherwise, never silently damaged pixels.
        """
        data = np.asarray(self._array(ref.group, name)[ref.start : ref.stop])
        if name == IMAGES:
            self._check_ids(ref)
            stored = self.read_array(ref, "pixel_sha256").tolist()
            damaged = [i for i, pixels, digest in zip(ref.ids, data, stored, strict=True) if pixel_digest(pixels) != digest]
            if damaged:
                raise StoreError(
                    f"shard {ref.key} of {redact_uri(self.uri)}: the stored pixels of {damaged[:5]} no longer match "
                    "their sha256 (the store was damaged); re-ingest them: re-run the job (it re-ingests its own input "
                    "store) or run `diffpir ingest` again"
                )
        return data

    def read_image(self, group: str, row: int) -> np.ndarray:
        """One input image, (H, W, 3) ``uint8``, by its row in the size group (verified like :meth:`read_array`)."""
        image_id = str(self._array(group, "ids")[row : row + 1][0])
        ref = ShardRef(group=group, index=row // self.shard_size, start=row, stop=row + 1, ids=(image_id,))
        return self.read_images(ref)[0]

    def rows_digest(self, ref: ShardRef) -> str:
        """``sha256:<hex>`` of the ids, source sha256 and pixel sha256 of the shard's rows: what the rows *are*.

        It changes whenever an image of the shard is added, removed, replaced or moved, whatever row it sits in.
        """
        columns = [self.read_array(ref, name).tolist() for name in _IDENTITY_ARRAYS]
        return "sha256:" + hashlib.sha256(json.dumps(columns).encode()).hexdigest()

    def damaged_rows(self, group: str) -> list[int]:
        """Rows of ``group`` whose stored pixels do not match their ``pixel_sha256`` (or cannot be read at all)."""
        images, digests = self._array(group, IMAGES), self._array(group, "pixel_sha256")
        damaged = []
        for start in range(0, images.shape[0], self.shard_size):
            stop = min(start + self.shard_size, images.shape[0])
            expected = digests[start:stop].tolist()
            try:
                block = images[start:stop]
            except Exception:  # a torn shard object: every row of it has to be ingested again.
                damaged += range(start, stop)
                continue
            damaged += [start + i for i, pixels in enumerate(block) if pixel_digest(pixels) != expected[i]]
        return damaged

    def read_meta(self, ref: ShardRef) -> list[ImageMeta]:
        """Provenance of the shard's images (id, source URI, sha256, source shape and mode)."""
        columns = {name: self.read_array(ref, name) for name in METADATA_ARRAYS}
        return [
            ImageMeta(
                id=str(columns["ids"][i]),
                source=str(columns["sources"][i]),
                sha256=str(columns["sha256"][i]),
                pixel_sha256=str(columns["pixel_sha256"][i]),
                source_shape=(int(columns["source_shape"][i, 0]), int(columns["source_shape"][i, 1])),
                source_mode=str(columns["source_mode"][i]),
            )
            for i in range(ref.size)
        ]

    def array_names(self, group: str) -> list[str]:
        """Names of the per-image arrays of ``group`` (``images`` and any outputs), nested names included."""
        node = self._root[f"groups/{group}"]
        return sorted(path for path, member in node.members(max_depth=None) if isinstance(member, zarr.Array))

    def has_array(self, group: str, name: str) -> bool:
        """True when ``group`` has the array ``name``."""
        return f"groups/{group}/{name}" in self._root

    def quarantine(self, limit: int | None = None) -> list[QuarantineEntry]:
        """Files the ingest skipped, with the reason for each (the first ``limit`` when given)."""
        node = self._root["quarantine"]
        columns = [node[name][:limit].tolist() for name in ("ids", "sources", "reasons")]
        return [QuarantineEntry(id=i, source=s, reason=r) for i, s, r in zip(*columns, strict=True)]

    def iter_images(self, refs: Sequence[ShardRef] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(id, (H, W, 3) uint8 image) for every image, one shard in memory at a time."""
        for ref in self.shards() if refs is None else refs:
            images = self.read_images(ref)
            yield from zip(ref.ids, images, strict=True)

    # ------------------------------------------------------------------ per-image arrays and outputs
    @_restructures
    def create_array(
        self,
        group: str,
        name: str,
        per_image_shape: Sequence[int],
        dtype: str | np.dtype,
        *,
        fill_value: Any = 0,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Create ``groups/<group>/<name>`` on the group's shard grid; a no-op if it exists with the same layout.

        Use it for evaluation inputs (``y``, possibly low-resolution, ``kernel``, ``mask``, ``seed`` with
        ``per_image_shape=()``) and for outputs (``restored``, or namespaced, e.g. ``jobs/<job>/restored``).
        """
        self._require_writable()
        _check_name(name)
        shape = (self._group_count(group), *(int(n) for n in per_image_shape))
        dtype = np.dtype(dtype)
        path = f"groups/{group}/{name}"
        if path in self._root:
            existing = self._root[path]
            if not isinstance(existing, zarr.Array) or existing.shape != shape or existing.dtype != dtype:
                raise StoreError(
                    f"{path} exists with shape {getattr(existing, 'shape', None)} / {getattr(existing, 'dtype', None)}, "
                    f"not {shape} / {dtype}; use another array name or a new store"
                )
            return
        self._root.create_array(
            path,
            shape=shape,
            dtype=dtype,
            chunks=(1, *shape[1:]),
            shards=(self.shard_size, *shape[1:]),
            compressors=_COMPRESSOR,
            fill_value=fill_value,
            dimension_names=["image", *(f"d{i}" for i in range(1, len(shape)))],
            attributes=dict(attributes or {}),
        )
        self._root.require_group(f"records/{group}/{name}")

    def write_shard_output(self, ref: ShardRef, name: str, data: np.ndarray) -> str:
        """Write one whole shard of array ``name`` and return its checksum (for :meth:`write_record`).

        Any earlier record of the shard is removed first, so a record never describes other data. Only one
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

    # ------------------------------------------------------------------ completion records
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
        """Record that shard ``ref`` of ``name`` is complete, after re-reading it to confirm ``checksum``.

        ``checksum`` is what :meth:`write_shard_output` returned; if the store holds different data (another writer,
        a lost write), or its rows no longer hold ``ref.ids`` (re-aligned meanwhile), this raises instead of writing a
        record. The record carries :meth:`rows_digest`, so it only ever counts for these images. It is one atomic object.
        """
        self._require_writable()
        self._check_ids(ref)
        stored = shard_checksum(self.read_array(ref, name))
        if stored != checksum:
            raise StoreError(
                f"shard {ref.key} of {name!r} holds data with checksum {stored}, not the {checksum} that was written; "
                "another writer touched this shard; write it again (one writer per shard)"
            )
        data_object = self._data_object(ref, name)
        fingerprint = self._fingerprint(data_object)  # of the object just verified: later checks need not read it
        record = ShardRecord(
            array=name,
            group=ref.group,
            shard=ref.index,
            start=ref.start,
            stop=ref.stop,
            checksum=checksum,
            rows=self.rows_digest(ref),
            data_object=data_object,
            fingerprint=fingerprint,
            identity=dict(identity),
            timings=dict(timings or {}),
            metrics=dict(metrics or {}),
            written_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        node = {"zarr_format": 3, "node_type": "group", "attributes": {"diffpir_record": record.model_dump(mode="json")}}
        fs, path = self._record_path(ref.group, ref.index, name)
        put_atomic(fs, path, json.dumps(node, indent=1).encode())
        return record

    def read_record(self, ref: ShardRef, name: str) -> ShardRecord | None:
        """The shard's completion record, or None when there is none."""
        record = self._record_json(ref.group, ref.index, name)
        return None if record is None else ShardRecord.model_validate(record)

    def _record_json(self, group: str, shard: int, name: str) -> dict[str, Any] | None:
        """The record of shard ``shard`` of ``group`` as stored (JSON), or None when there is none."""
        fs, path = self._record_path(group, shard, name)
        try:
            return json.loads(fs.cat_file(path))["attributes"]["diffpir_record"]
        except FileNotFoundError:
            return None

    def record_matches(self, ref: ShardRef, name: str, expected_identity: Mapping[str, str] | None = None) -> bool:
        """True when the shard is done: a record exists, covers ``ref``, was written for the ids and contents its rows
        hold now (so a result can never be relabelled), carries every ``expected_identity`` item, and its checksum
        equals that of the data now in the store (unreadable data counts as not done)."""
        rows = (tuple(self.read_array(ref, "ids").tolist()), self.rows_digest(ref))
        return self._done_record(ref, name, expected_identity or {}, rows) is not None

    def done_records(
        self, refs: Sequence[ShardRef], name: str, identities: Mapping[str, Mapping[str, str]], threads: int = 8
    ) -> dict[str, ShardRecord]:
        """The records of the shards of ``refs`` that are done, as :meth:`record_matches` decides it shard by shard
        (``identities`` by shard key), for many shards at once: per size group, its id and hash columns are read once,
        the records come from one listing and the record index (:mod:`diffpir_core.io.listing`; records it lacks are
        read by ``threads`` threads), the data objects' fingerprints from one listing; only data whose object changed
        since its record verified it is read and hashed."""
        rows = self._rows_by_shard(refs)
        found: dict[str, ShardRecord] = {}
        for group in dict.fromkeys(ref.group for ref in refs):
            found.update(self._group_done(group, [ref for ref in refs if ref.group == group], name, identities, rows, threads))
        return found

    def _group_done(
        self,
        group: str,
        refs: Sequence[ShardRef],
        name: str,
        identities: Mapping[str, Mapping[str, str]],
        rows: Mapping[str, tuple[tuple[str, ...], str]],
        threads: int,
    ) -> dict[str, ShardRecord]:
        records = self._group_records(group, name, [ref.index for ref in refs], threads)
        applying = [
            (ref, records[ref.index])
            for ref in refs
            if ref.index in records and ref.key in rows and _record_applies(ref, identities[ref.key], rows[ref.key], records[ref.index])
        ]
        prefix = f"groups/{group}/{name}/"
        fs, base = self._fs
        names = [record.data_object[len(prefix) :] for _, record in applying if record.data_object.startswith(prefix)]
        stamps = {path: fingerprint_of(info) for path, info in object_infos(fs, join(base, prefix.rstrip("/")), names).items()}
        found, unsure = {}, []
        for ref, record in applying:
            if record.fingerprint and stamps.get(record.data_object[len(prefix) :]) == record.fingerprint:
                found[ref.key] = record  # the very object whose checksum was verified when the record was written
            else:
                unsure.append((ref, record))
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="record-check") as pool:
            verified = list(pool.map(lambda item: self._data_verifies(item[0], name, item[1]), unsure))
        found.update({ref.key: record for (ref, record), ok in zip(unsure, verified, strict=True) if ok})
        return found

    def index_records(self, name: str, threads: int = 8) -> int:
        """Rewrite the record index of array ``name`` in every size group from its records as they are now (a job
        calls this once its shards are written, so later checks read one object instead of one per shard); returns
        the number of records indexed."""
        self._require_writable()
        fs, base = self._fs
        count = 0
        for group in self.groups():
            shards = range(-(-group.count // self.shard_size))
            read = functools.partial(self._raw_records, group.name, name, threads=threads)
            count += write_index(fs, join(base, f"records/{group.name}/{name}"), shards, read)
        return count

    def _group_records(self, group: str, name: str, shards: Sequence[int], threads: int) -> dict[int, ShardRecord]:
        """The records of array ``name`` that exist for ``shards`` of ``group``, by shard index (see
        :func:`listing.cached_records`)."""
        fs, base = self._fs
        read = functools.partial(self._raw_records, group, name, threads=threads)
        raw = cached_records(fs, join(base, f"records/{group}/{name}"), shards, read)
        return {shard: ShardRecord.model_validate(record) for shard, record in raw.items()}

    def _raw_records(self, group: str, name: str, shards: Iterable[int], threads: int) -> dict[int, dict[str, Any]]:
        """The record content (JSON) of the given shards of ``group``, read in parallel; absent ones left out."""
        shards = list(shards)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="record-read") as pool:
            found = pool.map(lambda shard: self._record_json(group, shard, name), shards)
            return {shard: record for shard, record in zip(shards, found, strict=True) if record is not None}

    def rows_digests(self, refs: Sequence[ShardRef]) -> dict[str, str]:
        """:meth:`rows_digest` of many shards, each identity column of a size group read once (shards of a group this
        store does not have are left out)."""
        return {key: digest for key, (_, digest) in self._rows_by_shard(refs).items()}

    def _rows_by_shard(self, refs: Sequence[ShardRef]) -> dict[str, tuple[tuple[str, ...], str]]:
        """(ids, rows digest) of every shard of ``refs``, from whole columns."""
        found: dict[str, tuple[tuple[str, ...], str]] = {}
        for group in dict.fromkeys(ref.group for ref in refs):
            try:
                columns = [self._array(group, column)[:].tolist() for column in _IDENTITY_ARRAYS]
            except StoreError:
                continue
            for ref in refs:
                if ref.group == group:
                    rows = [column[ref.start : ref.stop] for column in columns]
                    found[ref.key] = (tuple(rows[0]), "sha256:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest())
        return found

    def _done_record(
        self, ref: ShardRef, name: str, identity: Mapping[str, str], rows: tuple[tuple[str, ...], str]
    ) -> ShardRecord | None:
        record = self.read_record(ref, name)
        if record is None or not _record_applies(ref, identity, rows, record):
            return None
        if record.fingerprint and self._fingerprint(record.data_object) == record.fingerprint:
            return record  # the very object whose checksum was verified when the record was written
        return record if self._data_verifies(ref, name, record) else None

    def _data_verifies(self, ref: ShardRef, name: str, record: ShardRecord) -> bool:
        """True when the shard's data in the store has the record's checksum (unreadable data does not)."""
        try:
            data = self.read_array(ref, name)
        except Exception:  # a torn or corrupt shard object: the shard is simply not done.
            return False
        return shard_checksum(data) == record.checksum

    def _data_object(self, ref: ShardRef, name: str) -> str:
        """The object holding shard ``ref`` of array ``name`` (one per shard: the array's shards are the shard grid)."""
        array = self._array(ref.group, name)
        key = array.metadata.encode_chunk_key((ref.index, *([0] * (array.ndim - 1))))
        return f"groups/{ref.group}/{name}/{key}"

    def _fingerprint(self, relative: str) -> str:
        """:func:`listing.fingerprint_of` an object of this store, read fresh; ``absent`` when it does not exist.
        A record whose fingerprint still matches describes the data it verified without reading it again."""
        fs, base = self._fs
        try:
            return fingerprint_of(fs.info(join(base, relative), refresh=True))
        except FileNotFoundError:
            return "absent"

    def delete_record(self, ref: ShardRef, name: str) -> None:
        """Remove the shard's record if there is one (the shard then counts as not done)."""
        fs, path = self._record_path(ref.group, ref.index, name)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ used by ingest
    @_restructures
    def append(self, group: tuple[int, int], images: np.ndarray, metas: Sequence[ImageMeta]) -> None:
        """Append images (k, H, W, 3) with their provenance to the size group (created on first use).

        Ingest is the only writer of a store being created; it appends whole shards except when flushing a
        partial buffer early to bound memory (then the same writer completes the shard later).
        """
        self._require_writable()
        if group not in self._append_nodes:  # this process is the only writer: array handles stay valid
            node = self._require_size_group(*group)
            self._append_nodes[group] = {name: node[name] for name in (IMAGES, *METADATA_ARRAYS)}
        arrays = self._append_nodes[group]
        count = arrays["ids"].shape[0]
        new = count + len(metas)
        columns = _columns(images, metas)

        def grow_and_write(name: str) -> None:
            array = arrays[name]
            array.resize((new, *array.shape[1:]))
            array[count:new] = columns[name]

        # The arrays are independent objects: write them concurrently (one round trip deep on object stores).
        with ThreadPoolExecutor(max_workers=len(columns), thread_name_prefix="store-append") as pool:
            list(pool.map(grow_and_write, columns))

    @_restructures
    def write_rows(self, group: tuple[int, int], rows: Mapping[int, tuple[np.ndarray, ImageMeta]]) -> None:
        """Put images with their provenance into existing rows of a size group (a re-ingest replacing changed images
        or filling the rows of removed ones). Rows are written a whole shard object at a time, by this one writer."""
        self._require_writable()
        name = group_name(*group)
        order = sorted(rows)
        columns = _columns(np.stack([rows[row][0] for row in order]), [rows[row][1] for row in order])
        for column, values in columns.items():
            by_row = dict(zip(order, values, strict=True))
            self._patch_rows(self._array(name, column), order, by_row.__getitem__)

    @_restructures
    def fill_holes(self, group: str, holes: Sequence[int]) -> None:
        """Remove the rows ``holes`` from a size group: the last rows move into the holes (in order) and the group
        shrinks; every other row keeps its place, so only the shards holding a hole or a moved row change. A group
        left empty is deleted."""
        self._require_writable()
        self._append_nodes.clear()  # array handles of this writer change shape here
        count = self._group_count(group)
        new_count = count - len(set(holes))
        below = sorted(row for row in set(holes) if row < new_count)
        moves = dict(zip(below, (row for row in range(new_count, count) if row not in set(holes)), strict=True))
        for name in self.array_names(group):
            array = self._array(group, name)
            self._patch_rows(array, below, lambda dst, array=array: array[moves[dst]])  # sources lie past every hole
            array.resize((new_count, *array.shape[1:]))
        if new_count == 0:
            del self._root[f"groups/{group}"]
            del self._root[f"records/{group}"]

    def add_quarantine(self, entries: Sequence[QuarantineEntry]) -> None:
        """Append entries to the quarantine list."""
        self._require_writable()
        node = self._root["quarantine"]
        count = node["ids"].shape[0]
        for name, values in (("ids", [e.id for e in entries]), ("sources", [e.source for e in entries]), ("reasons", [e.reason for e in entries])):
            node[name].resize((count + len(entries),))
            node[name][count:] = np.array(values, dtype=object)

    @_restructures
    def clear_quarantine(self) -> None:
        """Empty the quarantine list (a re-ingest lists again the files that still cannot be ingested)."""
        self._require_writable()
        for name in ("ids", "sources", "reasons"):
            self._root[f"quarantine/{name}"].resize((0,))

    def mark_complete(self, **attributes: Any) -> None:
        """Mark the store complete (readers refuse incomplete stores) and merge ``attributes`` into ``diffpir``."""
        self._require_writable()
        self._root.attrs["diffpir"] = {**self.info, **attributes, "complete": True}

    def mark_incomplete(self) -> None:
        """Mark the store as being rewritten: readers refuse it until :meth:`mark_complete` (so an interrupted
        re-ingest is never mistaken for a complete store)."""
        self._require_writable()
        self._root.attrs["diffpir"] = {**self.info, "complete": False}

    # ------------------------------------------------------------------ internals
    def _array(self, group: str, name: str) -> zarr.Array:
        path = f"groups/{group}/{name}"
        if (array := self._arrays.get(path)) is not None:
            return array
        try:
            array = self._root[path]
        except KeyError as err:
            raise StoreError(f"{redact_uri(self.uri)} has no array {name!r} in size group {group!r}") from err
        assert isinstance(array, zarr.Array)
        self._arrays[path] = array
        return array

    def _group_count(self, group: str) -> int:
        return self._array(group, "ids").shape[0]

    def _check_ids(self, ref: ShardRef) -> None:
        ids = tuple(self.read_array(ref, "ids").tolist())
        if ids != ref.ids:
            raise StoreError(
                f"shard {ref.key} of {redact_uri(self.uri)} now holds the images {list(ids)[:5]}, not the planned "
                f"{list(ref.ids)[:5]}: the store was re-ingested or re-aligned meanwhile; run the job again"
            )

    @staticmethod
    def _patch_rows(array: zarr.Array, rows: Sequence[int], value_of: Callable[[int], Any]) -> None:
        """Set ``array[row] = value_of(row)`` for ``rows``, one shard object at a time (read once, written once)."""
        step = (array.shards or array.chunks)[0]
        blocks: dict[int, list[int]] = {}
        for row in rows:
            blocks.setdefault(row // step, []).append(row)
        for block, members in sorted(blocks.items()):
            start, stop = block * step, min((block + 1) * step, array.shape[0])
            data = np.asarray(array[start:stop])
            for row in members:
                data[row - start] = value_of(row)
            array[start:stop] = data

    def _require_size_group(self, height: int, width: int) -> zarr.Group:
        name = group_name(height, width)
        path = f"groups/{name}"
        if path in self._root:
            return self._root[path]
        node = self._root.create_group(path, attributes={"height": height, "width": width})
        shard = self.shard_size
        node.create_array(
            IMAGES,
            shape=(0, height, width, 3),
            dtype="uint8",
            chunks=(1, height, width, 3),
            shards=(shard, height, width, 3),
            compressors=_COMPRESSOR,
            dimension_names=["image", "y", "x", "c"],
            attributes={"layout": "NHWC", "range": "0..255"},
        )
        rows = column_chunk_rows(shard)
        for column in ("ids", "sources", "sha256", "pixel_sha256", "source_mode"):
            node.create_array(column, shape=(0,), dtype=str, chunks=(rows,))
        node.create_array("source_shape", shape=(0, 2), dtype="int32", chunks=(rows, 2))
        self._root.require_group(f"records/{name}")
        return node

    def _record_path(self, group: str, shard: int, name: str) -> tuple[Any, str]:
        _check_name(name)
        fs, base = self._fs
        return fs, join(base, f"records/{group}/{name}/{shard:06d}/{RECORD_NAME}")

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        return filesystem(self.uri, self.storage_options)

    def _require_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"{redact_uri(self.uri)} was opened read-only; open it with writable=True to write")


def column_chunk_rows(shard_size: int) -> int:
    """Rows per chunk of the id and provenance columns: whole shards, about :data:`COLUMN_CHUNK_ROWS` rows, so that
    checking thousands of shards reads a few column objects, not one per shard and column."""
    return shard_size * max(1, COLUMN_CHUNK_ROWS // shard_size)


def _columns(images: np.ndarray, metas: Sequence[ImageMeta]) -> dict[str, np.ndarray]:
    """The values of every per-image array of the dataset for ``images`` and their provenance (the pixel hashes are
    computed here, from the very pixels written)."""
    return {
        IMAGES: images,
        "ids": np.array([m.id for m in metas], dtype=object),
        "sources": np.array([m.source for m in metas], dtype=object),
        "sha256": np.array([m.sha256 for m in metas], dtype=object),
        "pixel_sha256": np.array([pixel_digest(pixels) for pixels in images], dtype=object),
        "source_shape": np.array([m.source_shape for m in metas], dtype=np.int32).reshape(-1, 2),
        "source_mode": np.array([m.source_mode for m in metas], dtype=object),
    }


def _record_applies(ref: ShardRef, identity: Mapping[str, str], rows: tuple[tuple[str, ...], str], record: ShardRecord) -> bool:
    """The record covers ``ref``, carries every ``identity`` item, and was written for the ids and contents
    (``rows``: ids, digest) the shard's rows hold now; its data is checked separately."""
    if (record.group, record.shard, record.start, record.stop) != (ref.group, ref.index, ref.start, ref.stop):
        return False
    if any(record.identity.get(key) != value for key, value in identity.items()):
        return False
    return rows[0] == ref.ids and record.rows == rows[1]


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name in _RESERVED:
        raise ValueError(
            f"invalid array name {name!r}: use letters, digits, '_', '-', '.', with '/' to nest; "
            f"{sorted(_RESERVED)} are reserved"
        )


def _reopen(uri: str, storage_options: StorageOptions, writable: bool) -> DatasetStore:
    return DatasetStore.open(uri, storage_options, writable=writable)
