"""The ingest's writes to a dataset store: images appended with their provenance, rows rewritten or removed, the
quarantine list. One writer (the ingest) at a time; :class:`~diffpir_core.io.dataset.DatasetStore` mixes them in."""

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field
from zarr.codecs import ZstdCodec

from diffpir_core.io.records import METADATA_ARRAYS

IMAGES = "images"
COMPRESSOR = ZstdCodec(level=3)
COLUMN_CHUNK_ROWS = 4096


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


def group_name(height: int, width: int) -> str:
    """The size-group name for images of ``height`` x ``width``."""
    return f"{height}x{width}"


def restructures(method: Callable[..., Any]) -> Callable[..., Any]:
    """For writers that create, resize or delete arrays: the store's opened arrays are forgotten before and after."""

    @functools.wraps(method)
    def wrapper(self: "IngestWrites", *args: Any, **kwargs: Any) -> Any:
        self._arrays.clear()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._arrays.clear()

    return wrapper


class IngestWrites:
    """Row writers of :class:`~diffpir_core.io.dataset.DatasetStore` (which provides ``_root``, ``_arrays``,
    ``_append_nodes``, ``_array``, ``_group_count``, ``array_names``, ``shard_size`` and ``_require_writable``)."""

    _root: zarr.Group
    _arrays: dict[str, zarr.Array]
    _append_nodes: dict[tuple[int, int], dict[str, zarr.Array]]
    shard_size: int

    @restructures
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

    @restructures
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

    @restructures
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
        for name, values in (
            ("ids", [e.id for e in entries]),
            ("sources", [e.source for e in entries]),
            ("reasons", [e.reason for e in entries]),
        ):
            node[name].resize((count + len(entries),))
            node[name][count:] = np.array(values, dtype=object)

    @restructures
    def clear_quarantine(self) -> None:
        """Empty the quarantine list (a re-ingest lists again the files that still cannot be ingested)."""
        self._require_writable()
        for name in ("ids", "sources", "reasons"):
            self._root[f"quarantine/{name}"].resize((0,))

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
            compressors=COMPRESSOR,
            dimension_names=["image", "y", "x", "c"],
            attributes={"layout": "NHWC", "range": "0..255"},
        )
        rows = column_chunk_rows(shard)
        for column in ("ids", "sources", "sha256", "pixel_sha256", "source_mode"):
            node.create_array(column, shape=(0,), dtype=str, chunks=(rows,))
        node.create_array("source_shape", shape=(0, 2), dtype="int32", chunks=(rows, 2))
        self._root.require_group(f"records/{name}")
        return node


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
