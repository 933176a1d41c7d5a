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
      records/<H>x<W>/<name>/<shard>/<identity digest>.json  completion records (``diffpir_core.io.records``)

The shard grid is the unit of work: every array of a size group shares it, one writer writes one whole shard, and a
shard counts as done for an identity when the record named by that identity exists. Records and output writes live
in :mod:`diffpir_core.io.records`, the ingest's row writes in :mod:`diffpir_core.io.rows`.
"""

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict

from diffpir_core import __version__
from diffpir_core.io.records import METADATA_ARRAYS, ShardRecords, ShardRef, StoreError, check_name
from diffpir_core.io.rows import (
    COMPRESSOR,
    IMAGES,
    ImageMeta,
    IngestWrites,
    QuarantineEntry,
    column_chunk_rows,
    pixel_digest,
    restructures,
)
from diffpir_core.io.uris import StorageOptions, filesystem, redact_uri, zarr_store

SCHEMA_VERSION = 2
_IDENTITY_ARRAYS = ("ids", "sha256", "pixel_sha256")  # what makes a row the same image


class SizeGroup(BaseModel):
    """One size group: all its images are ``height`` x ``width``."""

    model_config = ConfigDict(frozen=True)
    name: str
    height: int
    width: int
    count: int


class DatasetStore(IngestWrites, ShardRecords):
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
    def open(
        cls, uri: str, storage_options: StorageOptions | None = None, *, writable: bool = False
    ) -> "DatasetStore":
        """Open an existing, completely ingested store. ``writable=True`` to add arrays, outputs and records."""
        try:
            root = zarr.open_group(
                zarr_store(uri, storage_options, read_only=not writable), mode="r+" if writable else "r", zarr_format=3
            )
        except FileNotFoundError as err:
            raise StoreError(f"no dataset store at {redact_uri(uri)}; create one with `diffpir ingest`") from err
        info = root.attrs.get("diffpir")
        if not isinstance(info, dict) or "schema_version" not in info:
            raise StoreError(
                f"{redact_uri(uri)} is a Zarr group but not a diffpir dataset store (no 'diffpir' attribute)"
            )
        if info["schema_version"] > SCHEMA_VERSION:
            raise StoreError(
                f"{redact_uri(uri)} has store schema {info['schema_version']}, newer than this code "
                f"({SCHEMA_VERSION}); upgrade diffpir-flow"
            )
        if info["schema_version"] < SCHEMA_VERSION:
            raise StoreError(
                f"{redact_uri(uri)} has store schema {info['schema_version']}, written by an older diffpir-flow "
                "without "
                "pixel hashes; ingest its images again (a job re-ingests its own input store by itself)"
            )
        if not info.get("complete", False):
            raise StoreError(
                f"{redact_uri(uri)} was not completely written (interrupted ingest?); run the ingest again"
            )
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
        """Create an empty store (marked incomplete until :meth:`mark_complete`). ``attributes`` go into
        ``diffpir``."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        store = zarr_store(uri, storage_options, read_only=False)
        try:
            root = zarr.open_group(store, mode="w" if overwrite else "w-", zarr_format=3)
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
            raise StoreError(
                f"{redact_uri(uri)} already exists; pass overwrite=True (--overwrite) to replace it"
            ) from err
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
            uri,
            storage_options,
            shard_size=shard_size or source.shard_size,
            attributes={"kind": "aligned"},
            overwrite=overwrite,
        )
        target.align_with(source)
        return target

    @restructures
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
            node = (
                self._root[path]
                if path in self._root
                else self._root.create_group(path, attributes={"height": group.height, "width": group.width})
            )
            self._root.require_group(f"records/{group.name}")
            for name in METADATA_ARRAYS:
                src = source._array(group.name, name)
                if name not in node:
                    node.create_array(
                        name,
                        shape=(0, *src.shape[1:]),
                        dtype=src.dtype,
                        chunks=(column_chunk_rows(self.shard_size), *src.shape[1:]),
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
            result.append(
                SizeGroup(name=name, height=node.attrs["height"], width=node.attrs["width"], count=ids.shape[0])
            )
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
                refs.append(
                    ShardRef(group=size_group.name, index=index, start=start, stop=stop, ids=tuple(ids[start:stop]))
                )
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
            damaged = [
                i for i, pixels, digest in zip(ref.ids, data, stored, strict=True) if pixel_digest(pixels) != digest
            ]
            if damaged:
                raise StoreError(
                    f"shard {ref.key} of {redact_uri(self.uri)}: the stored pixels of {damaged[:5]} no longer match "
                    "their sha256 (the store was damaged); re-ingest them: re-run the job (it re-ingests its own "
                    "input "
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

    def rows_digests(self, refs: Sequence[ShardRef]) -> dict[str, str]:
        """:meth:`rows_digest` of many shards, each identity column of a size group read once (shards of a group this
        store does not have are left out)."""
        found: dict[str, str] = {}
        for group in dict.fromkeys(ref.group for ref in refs):
            try:
                columns = [self._array(group, column)[:].tolist() for column in _IDENTITY_ARRAYS]
            except StoreError:
                continue
            for ref in refs:
                if ref.group == group:
                    rows = [column[ref.start : ref.stop] for column in columns]
                    found[ref.key] = "sha256:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()
        return found

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
    @restructures
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
        check_name(name)
        shape = (self._group_count(group), *(int(n) for n in per_image_shape))
        dtype = np.dtype(dtype)
        path = f"groups/{group}/{name}"
        if path in self._root:
            existing = self._root[path]
            if not isinstance(existing, zarr.Array) or existing.shape != shape or existing.dtype != dtype:
                raise StoreError(
                    f"{path} exists with shape {getattr(existing, 'shape', None)} / "
                    f"{getattr(existing, 'dtype', None)}, "
                    f"not {shape} / {dtype}; use another array name or a new store"
                )
            return
        self._root.create_array(
            path,
            shape=shape,
            dtype=dtype,
            chunks=(1, *shape[1:]),
            shards=(self.shard_size, *shape[1:]),
            compressors=COMPRESSOR,
            fill_value=fill_value,
            dimension_names=["image", *(f"d{i}" for i in range(1, len(shape)))],
            attributes=dict(attributes or {}),
        )
        self._root.require_group(f"records/{group}/{name}")

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

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        return filesystem(self.uri, self.storage_options)

    def _require_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"{redact_uri(self.uri)} was opened read-only; open it with writable=True to write")


def _reopen(uri: str, storage_options: StorageOptions, writable: bool) -> DatasetStore:
    return DatasetStore.open(uri, storage_options, writable=writable)
