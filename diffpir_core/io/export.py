"""Export: write a store's images (or a restored output array) as PNG files named after the original ids.

``sub/a.jpg`` becomes ``sub/a.png``; if two ids would give the same name (``a.jpg`` and ``a.png``), both keep their
full id and gain ``.png`` (``a.jpg.png``, ``a.png.png``), so no file is overwritten. One shard is in memory at a time.
"""

import posixpath
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import BaseModel

from diffpir_core.io.decode import encode_png, to_rgb_uint8
from diffpir_core.io.store import IMAGES, DatasetStore
from diffpir_core.io.uris import StorageOptions, filesystem, join, redact_uri


class ExportSummary(BaseModel):
    """What an export wrote; shards without a matching completion record are skipped and listed."""

    store: str
    out: str
    array: str
    exported: int
    bytes_written: int
    skipped_shards: list[str]
    seconds: float


def png_names(ids: Sequence[str]) -> dict[str, str]:
    """The output file name of each id (see the module docstring for the collision rule)."""
    stems = {image_id: posixpath.splitext(image_id)[0] + ".png" for image_id in ids}
    clashes = Counter(stems.values())
    return {image_id: stem if clashes[stem] == 1 else image_id + ".png" for image_id, stem in stems.items()}


def export_images(
    store_uri: str,
    out_uri: str,
    *,
    array: str = IMAGES,
    storage_options: StorageOptions | None = None,
    out_storage_options: StorageOptions | None = None,
    require_record: bool | None = None,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write every image of ``array`` as ``<out_uri>/<id>.png``.

    ``array`` is ``images`` (the ingested inputs) or an output such as ``restored``; float arrays are taken as
    [0, 1]. With ``require_record`` (default: True for anything but ``images``) only shards whose completion record
    matches their data are exported. ``out_storage_options`` default to ``storage_options``.
    """
    started = time.perf_counter()
    store = DatasetStore.open(store_uri, storage_options)
    check_records = array != IMAGES if require_record is None else require_record
    fs, root = filesystem(out_uri, out_storage_options if out_storage_options is not None else storage_options)
    refs = [ref for ref in store.shards() if store.has_array(ref.group, array)]
    names = png_names([image_id for ref in refs for image_id in ref.ids])
    local = "file" in fs.protocol
    exported = written = 0
    skipped: list[str] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export-encode") as pool:
        for ref in refs:
            if check_records and not store.record_matches(ref, array):
                skipped.append(ref.key)
                continue
            data = store.read_array(ref, array)
            encoded = list(pool.map(lambda image: encode_png(to_rgb_uint8(np.asarray(image))), data))
            files = {join(root, names[image_id]): payload for image_id, payload in zip(ref.ids, encoded, strict=True)}
            if local:
                for parent in {posixpath.dirname(path) for path in files}:
                    fs.makedirs(parent, exist_ok=True)
            fs.pipe(files)
            exported += len(files)
            written += sum(len(payload) for payload in files.values())
            if progress is not None:
                progress(len(files))
    return ExportSummary(
        store=redact_uri(store_uri),
        out=redact_uri(out_uri),
        array=array,
        exported=exported,
        bytes_written=written,
        skipped_shards=skipped,
        seconds=time.perf_counter() - started,
    )
