"""Image sources for ingest: a folder tree of image files or an existing Zarr store, at any fsspec URL.

A source lists its items in a deterministic order (sorted by id) and loads them in batches as
:class:`~diffpir_core.io.decode.DecodedImage` or :class:`~diffpir_core.io.decode.ImageDecodeError`.
An item's id is its key relative to the dataset root (``sub/dir/img_001.png``), so results map back to source files.
"""

import hashlib
import posixpath
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import zarr

from diffpir_core.io.dataset import DatasetStore
from diffpir_core.io.decode import IMAGE_EXTENSIONS, DecodedImage, ImageDecodeError, decode_image, to_rgb_uint8
from diffpir_core.io.records import StoreError
from diffpir_core.io.uris import StorageOptions, filesystem, is_local, join, redact_uri, zarr_store

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024

LoadResult = DecodedImage | ImageDecodeError


@dataclass(frozen=True)
class SourceItem:
    """One image of a source: its id, where it comes from (credentials removed), its size in bytes if known."""

    id: str
    uri: str
    nbytes: int | None = None


class ImageSource(Protocol):
    """What ingest needs from a source."""

    uri: str
    ignored: dict[str, str]
    """Files left out, by key: why each one was (a hidden file, a format not read, a link to a folder)."""

    def items(self) -> list[SourceItem]:
        """Every candidate image, sorted by id."""
        ...

    def load(self, items: Sequence[SourceItem], pool: Executor) -> list[LoadResult]:
        """Load a batch, one result per item in the same order."""
        ...

    def digests(self, items: Sequence[SourceItem], pool: Executor) -> list[str | None]:
        """The sha256 (hex) of each item's source content, as :attr:`DecodedImage.sha256` has it; None when the
        item cannot be read (a re-ingest then loads it, and quarantines it if it still fails)."""
        ...


def open_source(
    uri: str,
    storage_options: StorageOptions | None = None,
    *,
    max_pixels: int,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> ImageSource:
    """A :class:`ZarrSource` when ``uri`` holds a Zarr store (``zarr.json`` at its root), else a
    :class:`FolderSource`."""
    fs, root = filesystem(uri, storage_options)
    if fs.exists(join(root, "zarr.json")):
        return ZarrSource(uri, storage_options)
    if not fs.isdir(root):
        raise FileNotFoundError(
            f"input {redact_uri(uri)} is not a folder or Zarr store; check the path and credentials"
        )
    return FolderSource(uri, storage_options, max_pixels=max_pixels, max_file_bytes=max_file_bytes)


class FolderSource:
    """Image files under a folder or prefix. Hidden files and non-image extensions are ignored (and reported)."""

    def __init__(self, uri: str, storage_options: StorageOptions | None, *, max_pixels: int, max_file_bytes: int):
        self.uri = uri
        self._fs, self._root = filesystem(uri, storage_options)
        self._max_pixels = max_pixels
        self._max_file_bytes = max_file_bytes
        self._paths: dict[str, str] = {}
        self.ignored: dict[str, str] = {}

    def items(self) -> list[SourceItem]:
        """Files with an image extension, sorted by their key relative to the root.

        The key is the literal rest of the path, not a normalised one: on object stores ``raw//a.png`` and
        ``raw/../a.png`` are objects of their own next to ``raw/a.png``, and each keeps a distinct id.
        """
        found = self._fs.find(self._root, detail=True)
        items = []
        for path, info in found.items():
            key = _utf8(path[len(self._root) + 1 :] if path.startswith(self._root + "/") else posixpath.basename(path))
            if (why := _ignored_because(key, info)) is not None:
                self.ignored[key] = why
                continue
            self._paths[key] = path
            items.append(SourceItem(id=key, uri=self._uri_of(path, key), nbytes=info.get("size")))
        self.ignored = dict(sorted(self.ignored.items()))
        return sorted(items, key=lambda item: item.id)

    def _uri_of(self, path: str, key: str) -> str:
        return _utf8(path) if is_local(self.uri) else f"{redact_uri(self.uri).rstrip('/')}/{key}"

    def load(self, items: Sequence[SourceItem], pool: Executor) -> list[LoadResult]:
        """Fetch the files (concurrently on object stores) and decode them on ``pool``.

        ``cat_ranges`` reads each path literally; ``cat`` would expand ``[`` ``]`` ``*`` ``?`` in names as globs.
        """
        return list(pool.map(self._decode, items, self._fetch(items)))

    def digests(self, items: Sequence[SourceItem], pool: Executor) -> list[str | None]:
        """The sha256 of each file's bytes (fetched like :meth:`load`, hashed on ``pool``); None if unreadable."""
        return list(pool.map(_sha256, self._fetch(items)))

    def _fetch(self, items: Sequence[SourceItem]) -> list[bytes | Exception]:
        """The bytes of each file, or the error that prevented reading it (files over ``max_file_bytes`` are not
        read)."""
        too_big = {item.id for item in items if item.nbytes is not None and item.nbytes > self._max_file_bytes}
        wanted = [self._paths[item.id] for item in items if item.id not in too_big]
        contents = self._fs.cat_ranges(wanted, None, None, on_error="return") if wanted else []
        fetched = dict(zip(wanted, contents, strict=True))
        return [
            ImageDecodeError(f"file of {item.nbytes} bytes exceeds max_file_bytes={self._max_file_bytes}")
            if item.id in too_big
            else fetched[self._paths[item.id]]
            for item in items
        ]

    def _decode(self, item: SourceItem, payload: bytes | Exception) -> LoadResult:
        if isinstance(payload, ImageDecodeError):
            return payload
        if isinstance(payload, Exception):
            return ImageDecodeError(f"could not read the file ({type(payload).__name__}: {payload})")
        try:
            return decode_image(payload, item.id, max_pixels=self._max_pixels)
        except ImageDecodeError as err:
            return err


def _sha256(payload: bytes | Exception) -> str | None:
    return None if isinstance(payload, Exception) else hashlib.sha256(payload).hexdigest()


def _utf8(name: str) -> str:
    """``name`` as valid UTF-8 text (ids and sources are stored as such): the bytes of a local file name that is not
    UTF-8, which Python decodes to lone surrogates, become ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _ignored_because(key: str, info: dict) -> str | None:
    """Why the listed file ``key`` is not ingested, or None when it is a candidate image."""
    if info.get("islink") and info.get("type") != "file":
        return "a link to a folder, not followed: give that folder as an input of its own, or copy its images in"
    if _is_hidden(key):
        return "a hidden file (its name or a folder's starts with '.')"
    extension = posixpath.splitext(key)[1].lower()
    if extension not in IMAGE_EXTENSIONS:
        known = " ".join(sorted(IMAGE_EXTENSIONS))
        return f"{extension or 'no extension'}: not an image format read here ({known}); convert it to one of them"
    return None


def _is_hidden(key: str) -> bool:
    """True when a component of ``key`` is a dot file or folder (``.git``); ``.`` and ``..`` are not hidden, they are
    literal parts of an object key (export makes them safe)."""
    return any(part.startswith(".") and part not in (".", "..") for part in key.split("/"))


class ZarrSource:
    """Images already in Zarr: a diffpir dataset store (ids kept) or a plain (N, H, W[, C]) array (ids = row
    numbers)."""

    def __init__(self, uri: str, storage_options: StorageOptions | None):
        self.uri = uri
        self.ignored: dict[str, str] = {}
        self._rows: dict[str, tuple[str, int]] = {}
        node = zarr.open(zarr_store(uri, storage_options, read_only=True), mode="r", zarr_format=3)
        self._plain: zarr.Array | None = None
        self._dataset: DatasetStore | None = None
        if isinstance(node, zarr.Array):
            self._plain = node
        else:
            try:
                self._dataset = DatasetStore.open(uri, storage_options)
            except StoreError as err:
                raise StoreError(f"{err}; to ingest a plain Zarr array, point the input at the array itself") from err

    def items(self) -> list[SourceItem]:
        """Every image, in the store's own order for a dataset store, by row for a plain array."""
        items = []
        if self._dataset is not None:
            for ref in self._dataset.shards():
                for row, image_id in enumerate(ref.ids, start=ref.start):
                    if image_id in self._rows:
                        raise StoreError(
                            f"{redact_uri(self.uri)} holds the id {image_id!r} twice (rows {self._rows[image_id]} and "
                            f"{(ref.group, row)}); ids must be unique: fix the store or ingest its images from files"
                        )
                    self._rows[image_id] = (ref.group, row)
                    items.append(SourceItem(id=image_id, uri=f"{redact_uri(self.uri)}#{ref.group}/{row}"))
            return sorted(items, key=lambda item: item.id)
        array = self._plain
        assert array is not None
        if array.ndim not in (3, 4):
            raise StoreError(
                f"{redact_uri(self.uri)} has shape {array.shape}; expected (N, H, W) or (N, H, W, C) images"
            )
        width = max(6, len(str(array.shape[0] - 1)))
        for row in range(array.shape[0]):
            image_id = f"{row:0{width}d}"
            self._rows[image_id] = ("", row)
            items.append(SourceItem(id=image_id, uri=f"{redact_uri(self.uri)}#{row}"))
        return items

    def load(self, items: Sequence[SourceItem], pool: Executor) -> list[LoadResult]:
        """Read the rows (on ``pool``) and convert them by the decode policy."""
        return list(pool.map(self._load_one, items))

    def digests(self, items: Sequence[SourceItem], pool: Executor) -> list[str | None]:
        """The sha256 of each row's raw bytes (what :meth:`load` records); None if the row cannot be read."""
        return [None if isinstance(result, ImageDecodeError) else result.sha256 for result in self.load(items, pool)]

    def _load_one(self, item: SourceItem) -> LoadResult:
        group, row = self._rows[item.id]
        try:
            raw = self._dataset.read_image(group, row) if self._dataset is not None else np.asarray(self._plain[row])
            pixels = np.ascontiguousarray(to_rgb_uint8(raw))
        except ImageDecodeError as err:
            return err
        except Exception as err:  # an unreadable (or damaged) row is quarantined like an unreadable file.
            return ImageDecodeError(f"could not read row {row} ({type(err).__name__}: {err})")
        return DecodedImage(
            pixels=pixels, source_mode=f"zarr:{raw.dtype}", sha256=hashlib.sha256(raw.tobytes()).hexdigest()
        )
