"""Export: write a store's images (or a restored output array) as PNG files named after the original ids.

Ids come from file names and object keys, so they may hold anything; :func:`png_names` turns them into file names
that stay inside the destination and never overwrite each other:

1. The id becomes a relative path: control characters (U+0000-U+001F, U+007F-U+009F) become ``_``; empty, ``.``
   and ``..`` components are dropped (``/abs.png`` -> ``abs.png``, ``a/../../x.png`` -> ``a/x.png``); a top-level
   folder named ``ids.csv`` becomes ``ids.csv_``; an id with nothing left becomes ``_``.
2. The extension becomes ``.png``: ``sub/a.jpg`` -> ``sub/a.png``.
3. Ids whose names clash (one name, or a name that is also a folder of another file) keep their full path and gain
   ``.png``: ``a.jpg`` and ``a.png`` -> ``a.jpg.png`` and ``a.png.png``.
4. Ids that still clash (``a.png`` next to ``a.png.png``) gain ``~`` and the first 8 hex digits of the sha256 of the
   id: ``a~7f071235.png``, ``a.png~b172d6bf.png``.

The summary counts the ids whose file is not simply ``<id without extension>.png``, and ``ids.csv`` in the
destination maps every exported id to its file. One shard is in memory at a time.
"""

import hashlib
import posixpath
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import BaseModel

from diffpir_core.io.csv_text import csv_text
from diffpir_core.io.dataset import DatasetStore
from diffpir_core.io.decode import encode_png, to_rgb_uint8
from diffpir_core.io.records import METADATA_ARRAYS, DamagedShard, ShardRecord, ShardRef, StoreError
from diffpir_core.io.rows import IMAGES
from diffpir_core.io.uris import StorageOptions, filesystem, join, put_atomic, redact_uri

MAPPING_FILE = "ids.csv"
RENAMED_SAMPLE = 20
CONFLICTS_SHOWN = 5
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ExportSummary(BaseModel):
    """What an export wrote; shards that are not done are skipped and listed, and images their
    shard's record lists as quarantined (not restored: missing or unfit per-image kernel/mask) are left out, by id.

    ``renamed`` counts the ids whose file is not ``<id without extension>.png`` (unsafe or clashing ids, see the
    module docstring); ``renamed_sample`` maps the first few of them to their files, ``mapping`` (``ids.csv``) all ids.
    """

    store: str
    out: str
    array: str
    exported: int
    bytes_written: int
    skipped_shards: list[str]
    quarantined: dict[str, str] = {}
    renamed: int
    renamed_sample: dict[str, str]
    mapping: str
    seconds: float


def _safe_path(image_id: str) -> str:
    """``image_id`` as a relative path that cannot leave the destination (rule 1 of the module docstring)."""
    parts = [part for part in _CONTROL.sub("_", image_id).split("/") if part not in ("", ".", "..")]
    if len(parts) > 1 and parts[0] == MAPPING_FILE:
        parts[0] += "_"
    return "/".join(parts) or "_"


def png_names(ids: Sequence[str]) -> dict[str, str]:
    """The file of each id, relative to the destination: safe, ending in ``.png``, one per id (module docstring)."""
    repeated = [image_id for image_id, count in Counter(ids).items() if count > 1]
    if repeated:
        raise ValueError(f"ids must be unique, but {repeated[:5]} occur more than once; fix the store's ids")
    paths = {image_id: _safe_path(image_id) for image_id in ids}
    names = {image_id: posixpath.splitext(path)[0] + ".png" for image_id, path in paths.items()}
    folders = {folder for path in paths.values() if "/" in path for folder in _folders(path)}  # renames keep folders
    for rename in (_full_name, _hashed_name):
        for image_id in _clashing(names, folders):
            names[image_id] = rename(image_id, paths[image_id])
    if clashing := _clashing(names, folders):
        raise ValueError(
            f"ids {sorted(clashing)[:5]} still map to clashing files after the collision rules; rename them in the "
            "store"
        )
    return names


def _full_name(image_id: str, path: str) -> str:
    return path + ".png"


def _hashed_name(image_id: str, path: str) -> str:
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{posixpath.splitext(path)[0]}~{digest[:8]}.png"


def _clashing(names: dict[str, str], folders: set[str]) -> list[str]:
    """Ids whose file is also another id's file, or one of the ``folders`` on the other ids' paths."""
    counts = Counter(names.values())
    return [image_id for image_id, name in names.items() if counts[name] > 1 or name in folders]


def _folders(name: str) -> list[str]:
    """The folders on the path of ``name``: ``a/b/c.png`` -> ``a``, ``a/b``."""
    parts = name.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def _is_renamed(image_id: str, name: str) -> bool:
    return name != posixpath.splitext(image_id)[0] + ".png"


def export_images(
    store_uri: str,
    out_uri: str,
    *,
    array: str = IMAGES,
    storage_options: StorageOptions | None = None,
    out_storage_options: StorageOptions | None = None,
    require_record: bool | None = None,
    identities: Mapping[str, Mapping[str, str]] | None = None,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    render: Callable[[np.ndarray], np.ndarray] | None = None,
    suffix: str = "",
) -> ExportSummary:
    """Write every image of ``array`` as ``<out_uri>/<id>.png`` (made safe, see the module docstring) and the
    id -> file mapping as ``<out_uri>/ids.csv``.

    ``array`` is ``images`` (the ingested inputs) or an output such as ``restored``; float arrays are taken as
    [0, 1]. With ``require_record`` (default: True for anything but ``images``) only done shards are exported: those
    with the record their identity in ``identities`` (by shard key: a job's, ``diffpir_core.runs.done``) names, or
    without ``identities`` whose newest record was written for the rows the shard holds now (its ``input``
    identity); their data is verified against the record's checksum. A damaged shard is not exported, and the export
    ends with a :class:`StoreError` naming it and the fix. ``out_storage_options`` default to ``storage_options``.
    Raises :class:`StoreError` when there is nothing to export (no such array, no images, no finished shard), and
    :class:`ExportConflict` before writing anything when the destination holds files of the names it would write
    (unless ``overwrite``) or a folder where a file goes (or the reverse). ``render`` turns one image of ``array``
    into the RGB uint8 picture written (e.g. a heatmap of a std map); ``suffix`` goes before ``.png`` in every name
    (``a.std-uncalibrated.png``).
    """
    started = time.perf_counter()
    store, refs, names, check_records = _sources(store_uri, array, storage_options, require_record, suffix)
    picture = render or (lambda image: to_rgb_uint8(np.asarray(image)))
    out_options = out_storage_options if out_storage_options is not None else storage_options
    records = _done_records(store, refs, array, identities) if check_records else None
    check_destination(out_uri, out_options, _planned_files(refs, names, records), overwrite=overwrite)
    fs, root = filesystem(out_uri, out_options)
    local = "file" in fs.protocol
    written = 0
    skipped: list[str] = []
    damaged: list[str] = []
    exported: list[str] = []
    quarantined: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export-encode") as pool:
        for ref in refs:
            record = None if records is None else records[ref.key]
            if records is not None and record is None:
                skipped.append(ref.key)
                continue
            left_out = record.quarantined if record is not None else {}
            quarantined.update(left_out)
            rows = [i for i, image_id in enumerate(ref.ids) if image_id not in left_out]  # quarantined rows are empty
            if not rows:
                continue
            try:
                data = store.read_array(ref, array) if record is None else store.read_verified(ref, array, record)[0]
            except DamagedShard:
                damaged.append(ref.key)
                continue
            ids = [ref.ids[i] for i in rows]
            encoded = list(pool.map(lambda image: encode_png(picture(image)), data[rows]))
            files = {join(root, names[image_id]): payload for image_id, payload in zip(ids, encoded, strict=True)}
            if local:
                for parent in {posixpath.dirname(path) for path in files}:
                    fs.makedirs(parent, exist_ok=True)
            fs.pipe(files)
            exported += ids
            written += sum(len(payload) for payload in files.values())
            if progress is not None:
                progress(len(files))
    if damaged:
        if exported:
            put_atomic(fs, join(root, MAPPING_FILE), _mapping(exported, names).encode("utf-8"))
        raise StoreError(
            f"{len(damaged)} shard(s) of {array!r} in {redact_uri(store_uri)} are damaged: their data no longer "
            "matches "
            f"the checksum in their record, so their images were not exported ({len(exported)} others were): "
            f"{damaged[:10]}; run `diffpir verify OUTPUT` (it forgets damaged shards), run the job again to restore "
            "them, then export again"
        )
    if not exported:
        if quarantined:
            raise StoreError(
                f"nothing to export from {array!r} in {redact_uri(store_uri)}: every finished image was quarantined "
                f"({len(quarantined)}, e.g. {next(iter(quarantined))}: {next(iter(quarantined.values()))}); "
                f"{len(skipped)} shards not finished"
            )
        raise StoreError(
            f"no shard of {array!r} in {redact_uri(store_uri)} has a completion record matching its data "
            f"({len(skipped)} shards skipped); let the job finish (or re-run it), or pass require_record=False"
        )
    put_atomic(fs, join(root, MAPPING_FILE), _mapping(exported, names).encode("utf-8"))
    renamed = {image_id: names[image_id] for image_id in exported if _is_renamed(image_id, names[image_id])}
    return ExportSummary(
        store=redact_uri(store_uri),
        out=redact_uri(out_uri),
        array=array,
        exported=len(exported),
        bytes_written=written,
        skipped_shards=skipped,
        quarantined=dict(sorted(quarantined.items())),
        renamed=len(renamed),
        renamed_sample=dict(sorted(renamed.items())[:RENAMED_SAMPLE]),
        mapping=join(redact_uri(out_uri), MAPPING_FILE),
        seconds=time.perf_counter() - started,
    )


def _mapping(exported: Sequence[str], names: Mapping[str, str]) -> str:
    """The text of ``ids.csv``: every exported id and its file."""
    return csv_text(("id", "file"), ({"id": image_id, "file": names[image_id]} for image_id in exported))


def _done_record(
    store: DatasetStore, ref: ShardRef, array: str, identities: Mapping[str, Mapping[str, str]] | None
) -> ShardRecord | None:
    """The record that makes ``ref`` done (see :func:`export_images`), or None."""
    if identities is not None:
        identity = identities.get(ref.key)
        return None if identity is None else store.read_record(ref, array, identity)
    record = store.read_record(ref, array)
    return record if record is not None and record.identity.get("input") == store.rows_digest(ref) else None


def _shards_with(store: DatasetStore, array: str) -> list[ShardRef]:
    """The shards whose size group has ``array``; a :class:`StoreError` saying why when there are none."""
    refs = [ref for ref in store.shards() if store.has_array(ref.group, array)]
    if refs:
        return refs
    if not store.groups():
        raise StoreError(f"{redact_uri(store.uri)} holds no images (see its quarantine); there is nothing to export")
    arrays = sorted(
        {name for group in store.groups() for name in store.array_names(group.name)} - set(METADATA_ARRAYS)
    )
    raise StoreError(f"{redact_uri(store.uri)} has no array {array!r}; pass one of {arrays} as array (--array)")


class ExportConflict(ValueError):
    """An export that would replace or collide with what its destination already holds."""


def export_conflicts(
    store_uri: str,
    out_uri: str,
    *,
    array: str = IMAGES,
    storage_options: StorageOptions | None = None,
    out_storage_options: StorageOptions | None = None,
    require_record: bool | None = None,
    identities: Mapping[str, Mapping[str, str]] | None = None,
    overwrite: bool = False,
    suffix: str = "",
) -> None:
    """Raise :class:`ExportConflict` when :func:`export_images` with these arguments would meet one (checked before
    anything is written; a command exporting several jobs checks them all first)."""
    store, refs, names, check_records = _sources(store_uri, array, storage_options, require_record, suffix)
    records = _done_records(store, refs, array, identities) if check_records else None
    out_options = out_storage_options if out_storage_options is not None else storage_options
    check_destination(out_uri, out_options, _planned_files(refs, names, records), overwrite=overwrite)


def _sources(
    store_uri: str, array: str, storage_options: StorageOptions | None, require_record: bool | None, suffix: str = ""
) -> tuple[DatasetStore, list[ShardRef], dict[str, str], bool]:
    """The store, its shards holding ``array``, every id's file name (``suffix`` before ``.png``), and whether
    records are checked."""
    store = DatasetStore.open(store_uri, storage_options)
    refs = _shards_with(store, array)
    names = png_names([image_id for ref in refs for image_id in ref.ids])
    if suffix:
        names = {image_id: name.removesuffix(".png") + suffix + ".png" for image_id, name in names.items()}
    return store, refs, names, array != IMAGES if require_record is None else require_record


def _done_records(
    store: DatasetStore, refs: Sequence[ShardRef], array: str, identities: Mapping[str, Mapping[str, str]] | None
) -> dict[str, ShardRecord | None]:
    """The record that makes each shard done (None: not done), read once for the destination check and the export."""
    return {ref.key: _done_record(store, ref, array, identities) for ref in refs}


def _planned_files(
    refs: Sequence[ShardRef], names: dict[str, str], records: Mapping[str, ShardRecord | None] | None
) -> set[str]:
    """The files (relative to the destination) an export may write: ``ids.csv`` and the files of every image not
    left out (a shard not done, an image its record quarantines); ``records`` None: no records are checked."""
    files = {MAPPING_FILE}
    for ref in refs:
        left_out: Collection[str] = ()
        if records is not None:
            record = records[ref.key]
            if record is None:
                continue
            left_out = record.quarantined
        files.update(names[image_id] for image_id in ref.ids if image_id not in left_out)
    return files


def check_destination(
    out_uri: str, storage_options: StorageOptions | None, files: set[str], *, overwrite: bool
) -> None:
    """Raise :class:`ExportConflict` naming the first few clashes when ``out_uri`` holds a folder where one of
    ``files`` goes or a file where one of their folders goes (never replaced), or, unless ``overwrite``, any of
    ``files`` themselves (the count, the first few names and the flag that replaces them)."""
    fs, root = filesystem(out_uri, storage_options)
    if not fs.exists(root):
        return
    held = fs.find(root, withdirs=True, detail=True)
    prefix = root.rstrip("/") + "/"
    kinds = {path[len(prefix) :]: info.get("type") for path, info in held.items() if path.startswith(prefix)}
    folders = {folder for name in files for folder in _folders(name)}
    blocked = sorted(name + "/" for name in files if kinds.get(name) == "directory")
    blocked += sorted(name for name in folders if kinds.get(name) == "file")
    where = redact_uri(out_uri)
    if blocked:
        raise ExportConflict(
            f"cannot export into {where}: {len(blocked)} of its entries are in the way (a folder where a PNG goes, "
            "or a "
            f"file where a folder goes): {_first(blocked)}; move them away or export into an empty folder"
        )
    replaced = sorted(name for name in files if kinds.get(name) == "file")
    if replaced and not overwrite:
        raise ExportConflict(
            f"{where} already holds {len(replaced)} file(s) this export would replace: {_first(replaced)}; "
            "pass --overwrite to replace them, or export into an empty folder"
        )


def _first(names: Sequence[str]) -> str:
    """``a, b, c`` or ``a, b, c and 7 more``."""
    shown = ", ".join(names[:CONFLICTS_SHOWN])
    return shown if len(names) <= CONFLICTS_SHOWN else f"{shown} and {len(names) - CONFLICTS_SHOWN} more"
