"""The data layer against a real S3 API (SeaweedFS on 127.0.0.1), through s3fs."""

import io

import numpy as np
import pytest
import s3fs
from PIL import Image

from diffpir_core.io import DamagedShard, DatasetStore, export_images, ingest, listing


def test_s3_round_trip_is_lossless_and_stores_no_credentials(rgb_folder, s3_bucket, s3_options, s3_credentials):
    root, expected = rgb_folder
    fs = s3fs.S3FileSystem(**s3_options)
    for image_id in expected:
        fs.pipe_file(f"{s3_bucket}/raw/{image_id}", (root / image_id).read_bytes())
    fs.pipe_file(f"{s3_bucket}/raw/broken.png", b"\x89PNG\r\n\x1a\nnot really")

    summary = ingest(f"{s3_bucket}/raw", f"{s3_bucket}/store.zarr", shard_size=4, storage_options=s3_options)
    assert (summary.ingested, summary.quarantined, summary.shards) == (11, 1, 3)

    store = DatasetStore.open(f"{s3_bucket}/store.zarr", s3_options)
    assert store.quarantine()[0].source == f"{s3_bucket}/raw/broken.png"
    assert store.read_meta(store.shards()[0])[0].source == f"{s3_bucket}/raw/sub/b0.png"
    exported = export_images(f"{s3_bucket}/store.zarr", f"{s3_bucket}/out", storage_options=s3_options)
    assert exported.exported == 11
    for image_id, pixels in expected.items():
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(fs.cat_file(f"{s3_bucket}/out/{image_id}")))), pixels
        )

    written = b"".join(fs.cat_file(path) for path in fs.find(f"{s3_bucket}/store.zarr") if path.endswith("zarr.json"))
    assert b'"schema_version"' in written
    assert not any(secret.encode() in written for secret in s3_credentials.values())


def test_s3_outputs_and_records(rgb_folder, s3_bucket, s3_options, tmp_path):
    root, _ = rgb_folder
    ingest(str(root), f"{s3_bucket}/s.zarr", shard_size=4, store_storage_options=s3_options)
    store = DatasetStore.open(f"{s3_bucket}/s.zarr", s3_options, writable=True)
    ref = store.shards("24x32")[1]
    store.create_array(ref.group, "restored", (24, 32, 3), "uint8")
    checksum = store.write_shard_output(ref, "restored", 255 - store.read_images(ref))
    identity = {"job": "s3", "input": store.rows_digest(ref)}  # a bare store's export checks the rows' digest
    store.write_record(ref, "restored", checksum=checksum, identity=identity)
    assert store.record_matches(ref, "restored", identity)
    summary = export_images(
        f"{s3_bucket}/s.zarr",
        str(tmp_path / "out"),
        array="restored",
        storage_options=s3_options,
        out_storage_options={},
    )
    assert (summary.exported, summary.skipped_shards) == (4, ["24x32/000000"])
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out" / "a04.png")), 255 - store.read_images(ref)[0]
    )


@pytest.mark.parametrize("few", [0, 16], ids=["listing", "one-request-each"])
def test_s3_bulk_check_lists_the_records_once_per_array_and_group(rgb_folder, s3_bucket, s3_options, monkeypatch, few):
    monkeypatch.setattr(listing, "FEW", few)
    root, _ = rgb_folder
    ingest(str(root), f"{s3_bucket}/listed.zarr", shard_size=4, store_storage_options=s3_options)
    store = DatasetStore.open(f"{s3_bucket}/listed.zarr", s3_options, writable=True)
    refs = store.shards()
    identities = {ref.key: {"job": "s3", "input": store.rows_digest(ref)} for ref in refs}
    for ref in refs:
        group = next(g for g in store.groups() if g.name == ref.group)
        store.create_array(ref.group, "restored", (group.height, group.width, 3), "uint8")
        checksum = store.write_shard_output(ref, "restored", 255 - store.read_images(ref))
        store.write_record(ref, "restored", checksum=checksum, identity=identities[ref.key])
    done = store.done_records(refs, "restored", identities)
    assert set(done) == {ref.key for ref in refs} and all(
        stamp.written_at.endswith("+00:00") for stamp in done.values()
    )
    assert not store.done_records(
        refs, "restored", {key: {**identity, "job": "other"} for key, identity in identities.items()}
    )

    ref, other = refs[0], refs[1]
    checksum = store.write_shard_output(ref, "restored", store.read_images(ref))  # restored again, other pixels
    rewritten = store.write_record(ref, "restored", checksum=checksum, identity=identities[ref.key])
    store._array(other.group, "restored")[other.start : other.stop] = store.read_images(other)  # changed in place
    done = store.done_records(refs, "restored", identities)
    assert set(done) == {r.key for r in refs}  # the listing trusts the records: damage is caught where data is read
    assert store.read_verified(ref, "restored")[1] == rewritten
    with pytest.raises(DamagedShard, match=other.key):
        store.read_verified(other, "restored")
    store.delete_record(other, "restored")
    assert set(store.done_records(refs, "restored", identities)) == {r.key for r in refs} - {other.key}
