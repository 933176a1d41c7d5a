"""Per-image arrays on the shard grid, whole-shard outputs and completion records."""

import os
from datetime import UTC, datetime

import numpy as np
import pytest

from diffpir_core.io import DamagedShard, DatasetStore, StoreError, ingest, record_name, shard_checksum

IDENTITY = {"job": "j1", "model": "sha256:abc", "code": "0.1.0"}


@pytest.fixture
def store(rgb_folder, tmp_path) -> DatasetStore:
    root, _ = rgb_folder
    ingest(str(root), str(tmp_path / "s.zarr"), shard_size=3)
    return DatasetStore.open(str(tmp_path / "s.zarr"), writable=True)


def _restore(images: np.ndarray) -> np.ndarray:
    return 255 - images


def test_output_and_record_round_trip(store):
    ref = store.shards("24x32")[1]
    store.create_array(ref.group, "jobs/j1/restored", (24, 32, 3), "uint8")
    assert not store.record_matches(ref, "jobs/j1/restored", IDENTITY)
    out = _restore(store.read_images(ref))
    checksum = store.write_shard_output(ref, "jobs/j1/restored", out)
    assert checksum == shard_checksum(out)
    assert store.read_record(ref, "jobs/j1/restored") is None
    record = store.write_record(
        ref,
        "jobs/j1/restored",
        checksum=checksum,
        identity=IDENTITY,
        timings={"restore": 1.5},
        metrics={"psnr": 30.25},
    )
    assert store.read_record(ref, "jobs/j1/restored") == record == store.read_record(ref, "jobs/j1/restored", IDENTITY)
    assert (record.group, record.shard, record.start, record.stop, record.metrics) == (
        "24x32",
        1,
        3,
        6,
        {"psnr": 30.25},
    )
    named = f"{store.uri}/records/24x32/jobs/j1/restored/000001/{record_name(IDENTITY)}"
    assert os.path.isfile(named) and len(record_name(IDENTITY)) == 32 + len(".json")
    assert store.record_matches(ref, "jobs/j1/restored", IDENTITY)
    assert not store.record_matches(ref, "jobs/j1/restored", {"job": "j1"})  # a record counts for its whole identity
    assert not store.record_matches(ref, "jobs/j1/restored", {**IDENTITY, "model": "sha256:other"})
    assert not store.record_matches(store.shards("24x32")[0], "jobs/j1/restored", IDENTITY)
    np.testing.assert_array_equal(store.read_array(ref, "jobs/j1/restored"), out)
    assert "jobs/j1/restored" in store.array_names(ref.group)


def test_rewriting_a_shard_is_idempotent_and_drops_the_stale_record(store):
    ref = store.shards()[0]
    store.create_array(ref.group, "restored", (16, 16, 3), "uint8")
    store.create_array(ref.group, "restored", (16, 16, 3), "uint8")  # same layout: a no-op
    out = _restore(store.read_images(ref))
    for _ in range(2):
        checksum = store.write_shard_output(ref, "restored", out)
        store.write_record(ref, "restored", checksum=checksum, identity=IDENTITY)
        assert store.record_matches(ref, "restored", IDENTITY)
    store.write_shard_output(ref, "restored", out // 2)
    assert store.read_record(ref, "restored") is None and not store.record_matches(ref, "restored", IDENTITY)


def test_record_is_refused_when_the_store_holds_other_data(store):
    ref = store.shards()[0]
    store.create_array(ref.group, "restored", (16, 16, 3), "uint8")
    checksum = store.write_shard_output(ref, "restored", _restore(store.read_images(ref)))
    store.write_shard_output(ref, "restored", store.read_images(ref))  # a second writer got in between
    with pytest.raises(StoreError, match="another writer touched this shard"):
        store.write_record(ref, "restored", checksum=checksum, identity=IDENTITY)
    assert store.read_record(ref, "restored") is None


def test_data_changed_underneath_is_caught_where_it_is_read(store, tmp_path):
    """The existence check trusts the record (no data read); reading the data checks it against the record."""
    ref = store.shards()[0]
    store.create_array(ref.group, "restored", (16, 16, 3), "uint8")
    checksum = store.write_shard_output(ref, "restored", _restore(store.read_images(ref)))
    store.write_record(ref, "restored", checksum=checksum, identity=IDENTITY)
    shard_file = tmp_path / "s.zarr" / "groups" / ref.group / "restored" / "c" / "0" / "0" / "0" / "0"
    shard_file.write_bytes(shard_file.read_bytes()[:100])  # torn write
    assert store.record_matches(ref, "restored", IDENTITY)
    with pytest.raises(DamagedShard, match=f"shard {ref.key} of 'restored' .* is damaged: its data is unreadable"):
        store.read_verified(ref, "restored")


def test_read_verified_compares_the_data_itself_with_the_record(store, tmp_path):
    ref = store.shards()[0]
    store.create_array(ref.group, "restored", (16, 16, 3), "uint8")
    out = _restore(store.read_images(ref))
    record = store.write_record(
        ref, "restored", checksum=store.write_shard_output(ref, "restored", out), identity=IDENTITY
    )
    shard_file = tmp_path / "s.zarr" / "groups" / ref.group / "restored" / "c" / "0" / "0" / "0" / "0"
    shard_file.write_bytes(shard_file.read_bytes())  # the same bytes, a new mtime (a copy that did not keep it)
    os.utime(shard_file, ns=(shard_file.stat().st_atime_ns, shard_file.stat().st_mtime_ns + 10**9))
    data, found = store.read_verified(ref, "restored")
    np.testing.assert_array_equal(data, out)
    assert found == record

    store._array(ref.group, "restored")[ref.start : ref.stop] = store.read_images(ref)  # other pixels, in place
    with pytest.raises(DamagedShard, match="not the sha256:") as caught:
        store.read_verified(ref, "restored", record)
    assert (caught.value.shard, caught.value.array) == (ref.key, "restored")


def test_id_columns_are_chunked_by_whole_shards_of_thousands_of_rows(store):
    ids = store._array(store.shards()[0].group, "ids")
    assert ids.chunks[0] % store.shard_size == 0 and ids.chunks[0] >= 4000


def test_evaluation_arrays_share_the_shard_grid(store):
    ref = store.shards("24x32")[2]
    store.create_array(ref.group, "y", (6, 8, 3), "float32")
    store.create_array(ref.group, "kernel", (5, 5), "float32")
    store.create_array(ref.group, "seed", (), "int64")
    y = np.random.default_rng(0).random((ref.size, 6, 8, 3), dtype=np.float32)
    store.write_shard_output(ref, "y", y)
    store.write_shard_output(ref, "seed", np.array([11, 12], dtype=np.int64))
    np.testing.assert_array_equal(store.read_array(ref, "y"), y)
    assert store.read_array(ref, "seed").tolist() == [11, 12]
    assert store.read_array(store.shards("24x32")[0], "seed").tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"needs an array of shape \(2, 5, 5\) and dtype float32"):
        store.write_shard_output(ref, "kernel", np.zeros((2, 5, 5), dtype=np.float64))
    with pytest.raises(StoreError, match="exists with shape"):
        store.create_array(ref.group, "y", (12, 16, 3), "float32")
    with pytest.raises(ValueError, match="invalid array name"):
        store.create_array(ref.group, "ids", (), "int64")


def test_read_only_store_refuses_writes(store):
    reader = DatasetStore.open(store.uri)
    with pytest.raises(StoreError, match="opened read-only"):
        reader.create_array("16x16", "restored", (16, 16, 3), "uint8")


def test_aligned_output_store_has_the_same_grid(store, tmp_path):
    out = DatasetStore.create_aligned(str(tmp_path / "out.zarr"), store)
    assert out.shards() == store.shards()
    assert out.info["kind"] == "aligned"
    ref = out.shards()[-1]
    out.create_array(ref.group, "restored", (24, 32, 3), "uint8")
    checksum = out.write_shard_output(ref, "restored", _restore(store.read_images(ref)))
    out.write_record(ref, "restored", checksum=checksum, identity=IDENTITY)
    reopened = DatasetStore.open(str(tmp_path / "out.zarr"))
    assert reopened.record_matches(ref, "restored", IDENTITY)
    assert [m.id for m in reopened.read_meta(ref)] == list(ref.ids)


def _write_all(store: DatasetStore, name: str = "restored") -> dict[str, object]:
    """Restore every shard (inverted pixels) with a record; returns the records by shard key."""
    records = {}
    for ref in store.shards():
        group = next(g for g in store.groups() if g.name == ref.group)
        store.create_array(ref.group, name, (group.height, group.width, 3), "uint8")
        checksum = store.write_shard_output(ref, name, _restore(store.read_images(ref)))
        records[ref.key] = store.write_record(ref, name, checksum=checksum, identity=IDENTITY)
    return records


def test_bulk_check_asks_only_whether_each_named_record_exists(store, tmp_path):
    root = tmp_path / "s.zarr"
    written = _write_all(store)
    refs = store.shards()
    identities = {ref.key: IDENTITY for ref in refs}
    done = store.done_records(refs, "restored", identities)
    assert set(done) == set(written) == {ref.key for ref in refs}
    for key, stamp in done.items():  # the time is the record object's, from the stat or listing
        assert stamp.name == record_name(IDENTITY)
        assert (
            abs(
                (
                    datetime.fromisoformat(stamp.written_at) - datetime.fromisoformat(written[key].written_at)
                ).total_seconds()
            )
            <= 1
        )

    first, second, third = refs[0], refs[1], refs[-1]
    record_file = root / "records" / first.group / "restored" / f"{first.index:06d}" / record_name(IDENTITY)
    record_file.write_text("{not json")  # no record is read to decide
    store.delete_record(second, "restored")
    other = {**identities, third.key: {**IDENTITY, "input": "sha256:other rows"}}
    assert set(store.done_records(refs, "restored", other)) == {ref.key for ref in refs} - {second.key, third.key}
    assert set(store.done_records(refs, "restored", {first.key: IDENTITY})) == {first.key}  # no identity: not done
    assert datetime.fromisoformat(done[first.key].written_at).tzinfo == UTC
