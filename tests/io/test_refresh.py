"""Content identity in the store: pixel hashes checked on read, a refresh that re-ingests exactly what changed and
keeps every other image in its row, and records that only count for the rows they were written for."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffpir_core.io import DatasetStore, ShardRef, StoreError, export_images, ingest, refresh

CHANGES = ("added", "changed", "repaired", "removed", "unchanged")


def _folder(root: Path, count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    root.mkdir(parents=True, exist_ok=True)
    pixels = {f"a{i:02d}.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(count)}
    for image_id, image in pixels.items():
        Image.fromarray(image).save(root / image_id)
    return pixels


def _changes(summary) -> dict[str, int]:
    return summary.model_dump(include=set(CHANGES))


def _flip_a_byte(shard_file: Path) -> None:
    data = bytearray(shard_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard_file.write_bytes(bytes(data))


def _check(store: DatasetStore, expected: dict[str, np.ndarray]) -> None:
    images = dict(store.iter_images())
    assert images.keys() == expected.keys()
    for image_id, pixels in expected.items():
        np.testing.assert_array_equal(images[image_id], pixels, err_msg=image_id)


def test_refresh_reingests_exactly_what_changed_and_keeps_every_other_row(tmp_path):
    src, uri = tmp_path / "in", str(tmp_path / "s.zarr")
    expected = _folder(src, 10)
    ingest(str(src), uri, shard_size=4)
    before = DatasetStore.open(uri)
    digests = {ref.key: before.rows_digest(ref) for ref in before.shards()}
    assert _changes(refresh(str(src), uri)) == {"added": 0, "changed": 0, "repaired": 0, "removed": 0, "unchanged": 10}

    expected["a02.png"] = 255 - expected["a02.png"]
    Image.fromarray(expected["a02.png"]).save(src / "a02.png")
    os.remove(src / "a05.png")
    del expected["a05.png"]
    expected["n1.png"] = np.full((16, 16, 3), 7, np.uint8)
    Image.fromarray(expected["n1.png"]).save(src / "n1.png")
    summary = refresh(str(src), uri)

    assert _changes(summary) == {"added": 1, "changed": 1, "repaired": 0, "removed": 1, "unchanged": 8}
    store = DatasetStore.open(uri)
    assert [ref.ids for ref in store.shards()] == [
        ("a00.png", "a01.png", "a02.png", "a03.png"),
        ("a04.png", "n1.png", "a06.png", "a07.png"),
        ("a08.png", "a09.png"),
    ]  # the changed image kept its row, the new one took the removed one's
    assert [store.rows_digest(ref) == digests[ref.key] for ref in store.shards()] == [False, False, True]
    _check(store, expected)
    assert store.info["counts"]["images"] == 10


def test_removed_images_are_filled_from_the_end_and_a_resized_image_changes_group(tmp_path):
    src, uri = tmp_path / "in", str(tmp_path / "s.zarr")
    expected = _folder(src, 10)
    ingest(str(src), uri, shard_size=4)
    for image_id in ("a01.png", "a07.png", "a08.png"):
        os.remove(src / image_id)
        del expected[image_id]
    expected["a03.png"] = np.zeros((24, 16, 3), np.uint8)
    Image.fromarray(expected["a03.png"]).save(src / "a03.png")

    summary = refresh(str(src), uri)
    assert _changes(summary) == {"added": 0, "changed": 1, "repaired": 0, "removed": 3, "unchanged": 6}
    assert summary.groups == {"16x16": 6, "24x16": 1}
    store = DatasetStore.open(uri)
    assert [ref.ids for ref in store.shards()] == [
        ("a00.png", "a06.png", "a02.png", "a09.png"),
        ("a04.png", "a05.png"),
        ("a03.png",),
    ]  # the holes at rows 1 and 3 take the last rows 6 and 9, in order; rows 0, 2, 4, 5 never moved
    _check(store, expected)

    for image_id in ("a03.png",):
        os.remove(src / image_id)
        del expected[image_id]
    refresh(str(src), uri)
    store = DatasetStore.open(uri)
    assert [group.name for group in store.groups()] == ["16x16"]  # an emptied group is gone
    _check(store, expected)


def test_files_that_no_longer_decode_are_removed_and_quarantined_like_new_bad_files(tmp_path):
    src, uri = tmp_path / "in", str(tmp_path / "s.zarr")
    expected = _folder(src, 6)
    ingest(str(src), uri, shard_size=4)
    (src / "a01.png").write_bytes(b"not a picture any more")
    del expected["a01.png"]
    (src / "bad.png").write_bytes(b"")
    summary = refresh(str(src), uri)
    assert _changes(summary) == {"added": 0, "changed": 0, "repaired": 0, "removed": 1, "unchanged": 5}
    store = DatasetStore.open(uri)
    assert sorted(entry.id for entry in store.quarantine()) == ["a01.png", "bad.png"] and summary.quarantined == 2
    _check(store, expected)
    (src / "bad.png").unlink()
    assert [entry.id for entry in refresh(str(src), uri).quarantine_sample] == ["a01.png"]  # the list is rebuilt


def test_damaged_pixels_are_an_error_naming_the_shard_and_a_refresh_repairs_them(tmp_path):
    src, uri = tmp_path / "in", str(tmp_path / "s.zarr")
    expected = _folder(src, 10)
    ingest(str(src), uri, shard_size=4)
    _flip_a_byte(tmp_path / "s.zarr" / "groups" / "16x16" / "images" / "c" / "1" / "0" / "0" / "0")
    store = DatasetStore.open(uri)
    store.read_images(store.shards()[0])
    with pytest.raises(StoreError, match=r"shard 16x16/000001 .*no longer match their sha256.*re-run the job"):
        store.read_images(store.shards()[1])
    with pytest.raises(StoreError, match="shard 16x16/000001"):
        export_images(uri, str(tmp_path / "png"))

    summary = refresh(str(src), uri)
    assert summary.repaired >= 1 and summary.repaired + summary.unchanged == 10 and summary.changed == 0
    _check(DatasetStore.open(uri), expected)


def test_an_interrupted_refresh_is_not_a_complete_store_and_old_schemas_are_refused(tmp_path):
    src, uri = tmp_path / "in", str(tmp_path / "s.zarr")
    _folder(src, 3)
    ingest(str(src), uri, shard_size=4)
    DatasetStore.open(uri, writable=True).mark_incomplete()
    with pytest.raises(StoreError, match="not completely written"):
        refresh(str(src), uri)
    root = tmp_path / "s.zarr" / "zarr.json"
    node = json.loads(root.read_text())
    node["attributes"]["diffpir"].update(complete=True, schema_version=1)
    root.write_text(json.dumps(node))
    with pytest.raises(StoreError, match="schema 1, written by an older diffpir-flow without pixel hashes; ingest"):
        DatasetStore.open(uri)


def _identity(store: DatasetStore, ref: ShardRef) -> dict[str, str]:
    """A job's record identity: the digest of the shard's rows (ids and contents) as they are now."""
    return {"job": "j", "input": store.rows_digest(ref)}


def test_records_only_count_for_the_ids_and_contents_they_were_written_for(tmp_path):
    src, uri = tmp_path / "in", str(tmp_path / "s.zarr")
    expected = _folder(src, 10)
    ingest(str(src), uri, shard_size=4)
    source = DatasetStore.open(uri)
    out = DatasetStore.create_aligned(str(tmp_path / "out.zarr"), source, shard_size=3)
    assert [ref.size for ref in out.shards()] == [3, 3, 3, 1]  # the job's own grid over the source's rows
    for ref in out.shards():
        out.create_array(ref.group, "restored", (16, 16, 3), "uint8")
        checksum = out.write_shard_output(ref, "restored", 255 - source.read_images(ref))
        out.write_record(ref, "restored", checksum=checksum, identity=_identity(out, ref))
    assert all(out.record_matches(ref, "restored", _identity(out, ref)) for ref in out.shards())

    os.remove(src / "a04.png")  # z.png takes its row: row 4, in shard 1 of the job's grid
    Image.fromarray(expected["a04.png"]).save(src / "z.png")  # the same pixels under another name: a new image
    refresh(str(src), uri)
    out.align_with(DatasetStore.open(uri))
    refs = out.shards()
    assert [ref.ids[1] for ref in refs[:2]] == ["a01.png", "z.png"] and len(refs) == 4
    assert [out.record_matches(ref, "restored", _identity(out, ref)) for ref in refs] == [True, False, True, True]
    exported = export_images(str(tmp_path / "out.zarr"), str(tmp_path / "png"), array="restored")
    assert (
        exported.skipped_shards == ["16x16/000001"]
        and exported.exported == 7
        and not (tmp_path / "png" / "z.png").exists()
    )
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "a00.png")), 255 - expected["a00.png"])
