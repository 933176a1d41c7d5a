"""Ingest: stream a folder tree / bucket prefix / Zarr store of images into a sharded dataset store, and
:func:`refresh` such a store when its source changed.

Memory stays bounded independent of the dataset size: files are fetched and decoded in batches, and each size
group buffers at most one shard (buffers are flushed early, as partial shards by this single writer, once their
total exceeds ``buffer_bytes``). Bad files never stop the ingest: they are quarantined with a reason.
"""

import heapq
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import BaseModel

from diffpir_core.io.dataset import DatasetStore
from diffpir_core.io.decode import DEFAULT_MAX_PIXELS, DecodedImage, ImageDecodeError
from diffpir_core.io.records import StoreError
from diffpir_core.io.rows import ImageMeta, QuarantineEntry, group_name
from diffpir_core.io.sizing import SizePolicy, apply_size_policy, validate_size_options
from diffpir_core.io.sources import DEFAULT_MAX_FILE_BYTES, ImageSource, LoadResult, SourceItem, open_source
from diffpir_core.io.uris import StorageOptions, redact_uri

DEFAULT_SHARD_SIZE = 64
QUARANTINE_SAMPLE = 20
IGNORED_SAMPLE = 5


class IngestSummary(BaseModel):
    """What an ingest did. ``quarantine_sample`` holds the first few entries; the store holds them all.

    ``ingested`` counts the images the store holds now; the other counts say how it got there (a fresh ingest only
    adds; :func:`refresh` also keeps, replaces, repairs and removes).
    """

    store: str
    source: str
    ingested: int
    quarantined: int
    ignored: int
    groups: dict[str, int]
    shards: int
    source_bytes: int
    seconds: float
    quarantine_sample: list[QuarantineEntry]
    ignored_sample: dict[str, str] = {}
    """The first few files left out (:data:`IGNORED_SAMPLE`), each with why."""
    added: int = 0
    changed: int = 0
    repaired: int = 0
    removed: int = 0
    unchanged: int = 0

    def ignored_lines(self) -> list[str]:
        """What was left out of the input, for a person: the count, then the first few files, each with why."""
        if not self.ignored:
            return []
        more = self.ignored - len(self.ignored_sample)
        return [
            f"ignored {self.ignored} file(s) of the input, not ingested:",
            *(f"  {key}: {why}" for key, why in self.ignored_sample.items()),
            *([f"  ... and {more} more"] if more > 0 else []),
        ]


class _ShardBuffers:
    """Images waiting, per size group, to fill that group's next shard; the single writer of a new store."""

    def __init__(
        self,
        store: DatasetStore,
        shard_size: int,
        max_bytes: int,
        written: Mapping[tuple[int, int], int] | None = None,
    ):
        self._store = store
        self._shard_size = shard_size
        self._max_bytes = max_bytes
        self._pending: dict[tuple[int, int], list[tuple[np.ndarray, ImageMeta]]] = {}
        self._written: dict[tuple[int, int], int] = dict(written or {})  # rows already in each group
        self._nbytes = 0

    def add(self, pixels: np.ndarray, meta: ImageMeta) -> None:
        """Queue an image; write its group's buffer when it completes a shard, or the largest buffer when the
        buffers hold more than ``max_bytes`` (a partial shard, completed by a later write of this same writer)."""
        shape = (pixels.shape[0], pixels.shape[1])
        pending = self._pending.setdefault(shape, [])
        pending.append((pixels, meta))
        self._nbytes += pixels.nbytes
        if (self._written.get(shape, 0) + len(pending)) % self._shard_size == 0:
            self._flush(shape)
        elif self._nbytes > self._max_bytes:
            self._flush(max(self._pending, key=lambda key: len(self._pending[key]) * key[0] * key[1]))

    def flush_all(self) -> None:
        """Write everything still buffered."""
        for shape in list(self._pending):
            self._flush(shape)

    def _flush(self, shape: tuple[int, int]) -> None:
        pending = self._pending.pop(shape, [])
        if not pending:
            return
        self._store.append(shape, np.stack([pixels for pixels, _ in pending]), [meta for _, meta in pending])
        self._written[shape] = self._written.get(shape, 0) + len(pending)
        self._nbytes -= sum(pixels.nbytes for pixels, _ in pending)


class _RowBuffers:
    """Images waiting to be written into given rows of their size group (a refresh's replacements and refills)."""

    def __init__(self, store: DatasetStore, max_bytes: int):
        self._store = store
        self._max_bytes = max_bytes
        self._pending: dict[tuple[int, int], dict[int, tuple[np.ndarray, ImageMeta]]] = {}
        self._nbytes = 0

    def put(self, row: int, pixels: np.ndarray, meta: ImageMeta) -> None:
        """Queue ``pixels`` for ``row`` of their size group; write everything once more than ``max_bytes`` wait."""
        self._pending.setdefault((pixels.shape[0], pixels.shape[1]), {})[row] = (pixels, meta)
        self._nbytes += pixels.nbytes
        if self._nbytes > self._max_bytes:
            self.flush()

    def flush(self) -> None:
        """Write everything queued."""
        for shape, rows in self._pending.items():
            self._store.write_rows(shape, rows)
        self._pending, self._nbytes = {}, 0


def ingest(
    input_uri: str,
    store_uri: str,
    *,
    size_policy: SizePolicy | str = SizePolicy.NATIVE,
    size: int | None = None,
    multiple: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    storage_options: StorageOptions | None = None,
    store_storage_options: StorageOptions | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    workers: int = 4,
    batch_size: int = 32,
    buffer_bytes: int = 512 * 1024 * 1024,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Ingest every image under ``input_uri`` into a new dataset store at ``store_uri``.

    ``size_policy``/``size``/``multiple`` choose the working size (see :mod:`diffpir_core.io.sizing`);
    ``storage_options`` are fsspec options for the input (e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}``),
    ``store_storage_options`` for the store (default: the same). Credentials are never written to the store.
    ``progress`` is called with the number of files handled after each batch.
    """
    policy = SizePolicy(size_policy)
    validate_size_options(policy, size, multiple)
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    started = time.perf_counter()
    source = open_source(input_uri, storage_options, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
    items = source.items()
    options = store_storage_options if store_storage_options is not None else storage_options
    store = DatasetStore.create(
        store_uri,
        options,
        shard_size=shard_size,
        overwrite=overwrite,
        attributes={
            "kind": "dataset",
            "source": redact_uri(input_uri),
            "size_policy": policy.value,
            "size": size,
            "multiple": multiple,
        },
    )
    buffers = _ShardBuffers(store, shard_size, buffer_bytes)
    quarantine_total = source_bytes = added = 0
    batches = [items[first : first + batch_size] for first in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-decode") as pool:
        for batch, results in _prefetched(source, batches, pool):
            quarantined = []
            for item, result in zip(batch, results, strict=True):
                outcome = _prepare(item, result, policy, size, multiple)
                if isinstance(outcome, QuarantineEntry):
                    quarantined.append(outcome)
                    continue
                source_bytes += item.nbytes or 0
                added += 1
                buffers.add(*outcome)
            if quarantined:
                store.add_quarantine(quarantined)
                quarantine_total += len(quarantined)
            if progress is not None:
                progress(len(batch))
    buffers.flush_all()
    return _finish(store, source, quarantine_total, source_bytes, started, added=added)


def refresh(
    input_uri: str,
    store_uri: str,
    *,
    storage_options: StorageOptions | None = None,
    store_storage_options: StorageOptions | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    workers: int = 4,
    batch_size: int = 32,
    buffer_bytes: int = 512 * 1024 * 1024,
    progress: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Bring the dataset store at ``store_uri`` (made by :func:`ingest` from ``input_uri``) up to date with its source.

    Every source file is read and hashed, and every stored image is checked against its pixel hash. Exactly what
    changed is ingested again (with the store's size policy): new files, files whose bytes changed, and images whose
    stored pixels are damaged; images whose files are gone (or no longer decode) are removed. Unchanged images keep
    their rows: a changed image is written back into its row, a new one fills the row of a removed one or is
    appended, and removed rows are filled with the group's last rows. So a shard that holds no change keeps exactly
    its ids and contents, and results computed for it stay valid. The store reads as incomplete while it is rewritten.
    ``progress`` is called with the number of files hashed after each batch.
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    started = time.perf_counter()
    options = store_storage_options if store_storage_options is not None else storage_options
    store = DatasetStore.open(store_uri, options, writable=True)
    info = store.info
    if info.get("kind") != "dataset":
        raise StoreError(f"{redact_uri(store_uri)} is not an ingested dataset store; only those can be refreshed")
    source = open_source(input_uri, storage_options, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
    items = source.items()
    stored = {  # id -> (group, row, source sha256)
        meta.id: (ref.group, row, meta.sha256)
        for ref in store.shards()
        for row, meta in enumerate(store.read_meta(ref), ref.start)
    }
    damaged = {(group.name, row) for group in store.groups() for row in store.damaged_rows(group.name)}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-decode") as pool:
        digests: dict[str, str | None] = {}
        for first in range(0, len(items), batch_size):
            batch = items[first : first + batch_size]
            digests.update(zip((item.id for item in batch), source.digests(batch, pool), strict=True))
            if progress is not None:
                progress(len(batch))
        kept = {i for i, (group, row, sha) in stored.items() if digests.get(i) == sha and (group, row) not in damaged}
        todo = [item for item in items if item.id not in kept]
        placer = _Placer(
            store, {i: (group, row) for i, (group, row, _) in stored.items() if i not in kept}, buffer_bytes
        )
        for image_id in stored.keys() - digests.keys():
            placer.remove(image_id)
        if not todo and not placer.holes():
            return _finish(store, source, 0, 0, started, unchanged=len(kept))
        store.mark_incomplete()
        store.clear_quarantine()
        changes = {"added": 0, "changed": 0, "repaired": 0, "removed": len(stored) - len(kept)}
        quarantine_total = source_bytes = 0
        policy, size, multiple = SizePolicy(info["size_policy"]), info.get("size"), info.get("multiple", 1)
        todo_batches = [todo[first : first + batch_size] for first in range(0, len(todo), batch_size)]
        for batch, results in _prefetched(source, todo_batches, pool):
            quarantined = []
            for item, result in zip(batch, results, strict=True):
                outcome = _prepare(item, result, policy, size, multiple)
                old = stored.get(item.id)
                if isinstance(outcome, QuarantineEntry):
                    quarantined.append(outcome)
                    if old is not None:
                        placer.remove(item.id)
                    continue
                source_bytes += item.nbytes or 0
                if old is None:
                    changes["added"] += 1
                else:
                    changes["removed"] -= 1
                    changes["repaired" if digests.get(item.id) == old[2] else "changed"] += 1
                placer.put(item.id, *outcome)
            if quarantined:
                store.add_quarantine(quarantined)
                quarantine_total += len(quarantined)
    placer.finish()
    return _finish(store, source, quarantine_total, source_bytes, started, unchanged=len(kept), **changes)


class _Placer:
    """Where a refresh puts each re-ingested image: back into its own row when it stays in its size group, else
    into the lowest row a removed image left in its new group, else at the end; then the rows still free are
    filled with each group's last rows (:meth:`DatasetStore.fill_holes`)."""

    def __init__(self, store: DatasetStore, rows: dict[str, tuple[str, int]], max_bytes: int):
        self._store = store
        self._rows = rows  # image id -> (group, row) of the stored images being re-ingested or removed
        self._free: dict[str, list[int]] = {}  # per group, a heap of the rows nobody holds any more
        self._placed = _RowBuffers(store, max_bytes)
        self._appended = _ShardBuffers(
            store, store.shard_size, max_bytes, {(g.height, g.width): g.count for g in store.groups()}
        )

    def remove(self, image_id: str) -> None:
        """The stored image ``image_id`` is gone (deleted, or no longer decodes): its row is free."""
        group, row = self._rows.pop(image_id)
        heapq.heappush(self._free.setdefault(group, []), row)

    def holes(self) -> int:
        """How many rows are free now."""
        return sum(len(rows) for rows in self._free.values())

    def put(self, image_id: str, pixels: np.ndarray, meta: ImageMeta) -> None:
        """Queue a (re-)ingested image for its row (see the class docstring)."""
        group = group_name(pixels.shape[0], pixels.shape[1])
        if image_id in self._rows and self._rows[image_id][0] == group:
            self._placed.put(self._rows.pop(image_id)[1], pixels, meta)
            return
        if image_id in self._rows:
            self.remove(image_id)
        if self._free.get(group):
            self._placed.put(heapq.heappop(self._free[group]), pixels, meta)
        else:
            self._appended.add(pixels, meta)

    def finish(self) -> None:
        """Write everything queued, then close the rows still free."""
        self._placed.flush()
        self._appended.flush_all()
        for group, rows in self._free.items():
            if rows:
                self._store.fill_holes(group, rows)


def _finish(
    store: DatasetStore, source: ImageSource, quarantined: int, source_bytes: int, started: float, **changes: int
) -> IngestSummary:
    """Mark the store complete with its groups and counts, and summarise what was done."""
    groups = {group.name: group.count for group in store.groups()}
    counts = {"images": sum(groups.values()), "quarantined": quarantined, "ignored": len(source.ignored)}
    store.mark_complete(groups=list(groups), counts=counts)
    return IngestSummary(
        store=redact_uri(store.uri),
        source=redact_uri(source.uri),
        ingested=counts["images"],
        quarantined=quarantined,
        ignored=len(source.ignored),
        groups=groups,
        shards=len(store.shards()),
        source_bytes=source_bytes,
        seconds=time.perf_counter() - started,
        quarantine_sample=store.quarantine(limit=QUARANTINE_SAMPLE),
        ignored_sample=dict(list(source.ignored.items())[:IGNORED_SAMPLE]),
        **changes,
    )


def _prefetched(
    source: ImageSource, batches: list[list[SourceItem]], pool: ThreadPoolExecutor
) -> Iterator[tuple[list[SourceItem], list[LoadResult]]]:
    """Each batch with its loaded results; the next batch is fetched and decoded while the caller writes this one
    (at most two batches in memory)."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-prefetch") as prefetch:
        upcoming = prefetch.submit(source.load, batches[0], pool)
        for number, batch in enumerate(batches):
            results = upcoming.result()
            if number + 1 < len(batches):
                upcoming = prefetch.submit(source.load, batches[number + 1], pool)
            yield batch, results


def _prepare(
    item: SourceItem, result: DecodedImage | ImageDecodeError, policy: SizePolicy, size: int | None, multiple: int
) -> tuple[np.ndarray, ImageMeta] | QuarantineEntry:
    """The working-size pixels and provenance of a decoded item, or its quarantine entry."""
    if isinstance(result, ImageDecodeError):
        return QuarantineEntry(id=item.id, source=item.uri, reason=str(result))
    try:
        pixels = apply_size_policy(result.pixels, policy, size, multiple)
    except ValueError as err:
        return QuarantineEntry(id=item.id, source=item.uri, reason=f"size policy {policy.value}: {err}")
    meta = ImageMeta(
        id=item.id,
        source=item.uri,
        sha256=result.sha256,
        source_shape=(result.pixels.shape[0], result.pixels.shape[1]),
        source_mode=result.source_mode,
    )
    return pixels, meta
