"""Ingest: stream a folder tree / bucket prefix / Zarr store of images into a sharded dataset store.

Memory stays bounded independent of the dataset size: files are fetched and decoded in batches, and each size
group buffers at most one shard (buffers are flushed early, as partial shards by this single writer, once their
total exceeds ``buffer_bytes``). Bad files never stop the ingest: they are quarantined with a reason.
"""

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import BaseModel

from diffpir_core.io.decode import DEFAULT_MAX_PIXELS, DecodedImage, ImageDecodeError
from diffpir_core.io.sizing import SizePolicy, apply_size_policy, validate_size_options
from diffpir_core.io.sources import DEFAULT_MAX_FILE_BYTES, ImageSource, LoadResult, SourceItem, open_source
from diffpir_core.io.store import DatasetStore, ImageMeta, QuarantineEntry
from diffpir_core.io.uris import StorageOptions, redact_uri

DEFAULT_SHARD_SIZE = 64
QUARANTINE_SAMPLE = 20


class IngestSummary(BaseModel):
    """What an ingest did. ``quarantine_sample`` holds the first few entries; the store holds them all."""

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


class _ShardBuffers:
    """Images waiting, per size group, to fill that group's next shard; the single writer of a new store."""

    def __init__(self, store: DatasetStore, shard_size: int, max_bytes: int):
        self._store = store
        self._shard_size = shard_size
        self._max_bytes = max_bytes
        self._pending: dict[tuple[int, int], list[tuple[np.ndarray, ImageMeta]]] = {}
        self._written: dict[tuple[int, int], int] = {}
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
        attributes={"kind": "dataset", "source": redact_uri(input_uri), "size_policy": policy.value, "size": size, "multiple": multiple},
    )
    buffers = _ShardBuffers(store, shard_size, buffer_bytes)
    quarantine_total = 0
    source_bytes = 0
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
                buffers.add(*outcome)
            if quarantined:
                store.add_quarantine(quarantined)
                quarantine_total += len(quarantined)
            if progress is not None:
                progress(len(batch))
    buffers.flush_all()
    groups = {group.name: group.count for group in store.groups()}
    counts = {"images": sum(groups.values()), "quarantined": quarantine_total, "ignored": len(source.ignored)}
    store.mark_complete(groups=list(groups), counts=counts)
    return IngestSummary(
        store=redact_uri(store_uri),
        source=redact_uri(input_uri),
        ingested=counts["images"],
        quarantined=quarantine_total,
        ignored=len(source.ignored),
        groups=groups,
        shards=len(store.shards()),
        source_bytes=source_bytes,
        seconds=time.perf_counter() - started,
        quarantine_sample=store.quarantine(limit=QUARANTINE_SAMPLE),
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
