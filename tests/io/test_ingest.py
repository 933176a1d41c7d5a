"""Ingest from folders, memory:// and Zarr into sharded stores; quarantine; determinism; export round trips."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from diffpir_core.io import DatasetStore, StoreError, export_images, ingest


def _read_png_folder(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))}


def test_folder_to_zarr_to_png_round_trip_is_lossless(rgb_folder, tmp_path):
    root, expected = rgb_folder
    summary = ingest(str(root), str(tmp_path / "s.zarr"), shard_size=3)
    assert (summary.ingested, summary.quarantined, summary.groups, summary.shards) == (
        11,
        0,
        {"16x16": 3, "24x32": 8},
        4,
    )
    store = DatasetStore.open(str(tmp_path / "s.zarr"))
    assert [(r.group, r.index, r.start, r.stop) for r in store.shards()] == [
        ("16x16", 0, 0, 3),
        ("24x32", 0, 0, 3),
        ("24x32", 1, 3, 6),
        ("24x32", 2, 6, 8),
    ]
    assert store.shards()[0].ids == ("sub/b0.png", "sub/b1.png", "sub/b2.png")
    exported = export_images(str(tmp_path / "s.zarr"), str(tmp_path / "out"))
    assert exported.exported == 11
    back = _read_png_folder(tmp_path / "out")
    assert back.keys() == expected.keys()
    for image_id, pixels in expected.items():
        np.testing.assert_array_equal(back[image_id], pixels)


def test_store_layout_is_plain_zarr_v3(rgb_folder, tmp_path):
    root, expected = rgb_folder
    ingest(str(root), str(tmp_path / "s.zarr"), shard_size=4)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r", zarr_format=3)
    images = group["groups/24x32/images"]
    assert (images.shape, images.chunks, images.shards, images.dtype) == (
        (8, 24, 32, 3),
        (1, 24, 32, 3),
        (4, 24, 32, 3),
        np.uint8,
    )
    np.testing.assert_array_equal(images[5], expected["a05.png"])
    assert group["groups/24x32/ids"][:].tolist() == [f"a{i:02d}.png" for i in range(8)]
    assert group["groups/16x16/source_shape"][:].tolist() == [[16, 16]] * 3
    assert group["groups/16x16/sources"][0] == str(root / "sub/b0.png")
    assert group["groups/24x32/pixel_sha256"][5] == hashlib.sha256(expected["a05.png"].tobytes()).hexdigest()
    info = group.attrs["diffpir"]
    assert (info["schema_version"], info["complete"], info["shard_size"], info["counts"]) == (
        2,
        True,
        4,
        {"images": 11, "quarantined": 0, "ignored": 0},
    )


def test_messy_dataset_ingests_completely_with_four_quarantined(tmp_path, encode_image):
    rng = np.random.default_rng(11)
    root = tmp_path / "messy"
    root.mkdir()
    good = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    (root / "good.png").write_bytes(encode_image(good))
    png = encode_image(good)
    idat = png.index(b"IDAT") + 4
    (root / "corrupt.png").write_bytes(png[:idat] + b"\xff\xff" + png[idat + 2 :])
    jpeg = encode_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 3 // 4])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("this is not a picture\n")
    deep = np.full((16, 16), 65535, dtype=np.uint16)
    deep[0, 0] = 514
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, deep)
    (root / "deep16.tif").write_bytes(buffer.getvalue())
    (root / "gray.png").write_bytes(encode_image(good[:, :, 1]))
    rgba = np.dstack([good, np.full((16, 16), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    (root / "alpha.png").write_bytes(encode_image(rgba))
    (root / "README.txt").write_text("notes")

    summary = ingest(str(root), str(tmp_path / "m.zarr"), shard_size=2)

    assert (summary.ingested, summary.quarantined, summary.ignored) == (4, 4, 1)
    store = DatasetStore.open(str(tmp_path / "m.zarr"))
    reasons = {entry.id: entry.reason for entry in store.quarantine()}
    assert sorted(reasons) == ["corrupt.png", "empty.png", "text.png", "truncated.jpg"]
    assert "corrupt or truncated image data" in reasons["corrupt.png"]
    assert "corrupt or truncated image data" in reasons["truncated.jpg"]
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["text.png"].startswith("not an image")
    images = dict(store.iter_images())
    assert sorted(images) == ["alpha.png", "deep16.tif", "good.png", "gray.png"]
    np.testing.assert_array_equal(images["good.png"], good)
    assert images["deep16.tif"][0, 0].tolist() == [2, 2, 2] and images["deep16.tif"][1, 1].tolist() == [255] * 3
    np.testing.assert_array_equal(images["gray.png"], good[:, :, 1:2].repeat(3, axis=2))
    assert images["alpha.png"][0, 0].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(images["alpha.png"][1:], good[1:])
    modes = {meta.id: meta.source_mode for ref in store.shards() for meta in store.read_meta(ref)}
    assert modes == {"alpha.png": "RGBA", "deep16.tif": "tiff:uint16x1", "good.png": "RGB", "gray.png": "L"}


def test_ingest_is_deterministic(rgb_folder, tmp_path):
    root, _ = rgb_folder
    stores = []
    for name, workers in (("one.zarr", 1), ("two.zarr", 3)):
        ingest(str(root), str(tmp_path / name), shard_size=2, workers=workers, batch_size=5)
        stores.append(DatasetStore.open(str(tmp_path / name)))
    assert stores[0].shards() == stores[1].shards()
    for ref in stores[0].shards():
        np.testing.assert_array_equal(stores[0].read_images(ref), stores[1].read_images(ref))


def test_small_buffer_flushes_partial_shards_without_changing_the_result(tmp_path, encode_image):
    rng = np.random.default_rng(5)
    root = tmp_path / "sizes"
    root.mkdir()
    expected = {}
    for i in range(12):  # alternating sizes: both groups' buffers fill at once
        pixels = rng.integers(0, 256, (8 + 4 * (i % 3), 8, 3), dtype=np.uint8)
        expected[f"{i:02d}.png"] = pixels
        (root / f"{i:02d}.png").write_bytes(encode_image(pixels))
    ingest(str(root), str(tmp_path / "s.zarr"), shard_size=3, buffer_bytes=500, batch_size=4)
    store = DatasetStore.open(str(tmp_path / "s.zarr"))
    assert {g.name: g.count for g in store.groups()} == {"8x8": 4, "12x8": 4, "16x8": 4}
    assert [ref.size for ref in store.shards()] == [3, 1, 3, 1, 3, 1]
    images = dict(store.iter_images())
    assert images.keys() == expected.keys()
    for image_id, pixels in expected.items():
        np.testing.assert_array_equal(images[image_id], pixels)


def test_center_crop_policy_gives_one_group(rgb_folder, tmp_path):
    root, expected = rgb_folder
    summary = ingest(str(root), str(tmp_path / "c.zarr"), size_policy="center_crop", size=16, shard_size=4)
    assert summary.groups == {"16x16": 11}
    store = DatasetStore.open(str(tmp_path / "c.zarr"))
    images = dict(store.iter_images())
    np.testing.assert_array_equal(images["a03.png"], expected["a03.png"][4:20, 8:24])
    assert store.info["size_policy"] == "center_crop"
    metas = {m.id: m for ref in store.shards() for m in store.read_meta(ref)}
    assert metas["a03.png"].source_shape == (24, 32)


def test_memory_and_zarr_inputs(rgb_folder, tmp_path):
    import fsspec

    root, expected = rgb_folder
    memory = fsspec.filesystem("memory")
    for image_id in expected:
        memory.pipe_file(f"/in-{tmp_path.name}/{image_id}", (root / image_id).read_bytes())
    ingest(f"memory://in-{tmp_path.name}", f"memory://store-{tmp_path.name}.zarr", shard_size=4)
    from_memory = DatasetStore.open(f"memory://store-{tmp_path.name}.zarr")
    assert dict(from_memory.iter_images()).keys() == expected.keys()

    ingest(f"memory://store-{tmp_path.name}.zarr", str(tmp_path / "again.zarr"), size_policy="modcrop", multiple=16)
    again = dict(DatasetStore.open(str(tmp_path / "again.zarr")).iter_images())
    np.testing.assert_array_equal(again["a01.png"], expected["a01.png"][:16, :32])

    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=(3, 8, 8), dtype="uint16", chunks=(1, 8, 8))
    plain[:] = np.arange(3 * 64, dtype=np.uint16).reshape(3, 8, 8) * 257
    summary = ingest(str(tmp_path / "plain.zarr"), str(tmp_path / "from_plain.zarr"))
    images = dict(DatasetStore.open(str(tmp_path / "from_plain.zarr")).iter_images())
    assert summary.ingested == 3 and sorted(images) == ["000000", "000001", "000002"]
    np.testing.assert_array_equal(images["000002"][:, :, 0], np.arange(128, 192, dtype=np.uint8).reshape(8, 8))


def test_existing_or_incomplete_stores_are_refused(rgb_folder, tmp_path):
    root, _ = rgb_folder
    ingest(str(root), str(tmp_path / "s.zarr"))
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        ingest(str(root), str(tmp_path / "s.zarr"))
    assert ingest(str(root), str(tmp_path / "s.zarr"), overwrite=True).ingested == 11
    DatasetStore.create(str(tmp_path / "half.zarr"), shard_size=4)
    with pytest.raises(StoreError, match="not completely written"):
        DatasetStore.open(str(tmp_path / "half.zarr"))
    with pytest.raises(FileNotFoundError, match="is not a folder or Zarr store"):
        ingest(str(tmp_path / "missing"), str(tmp_path / "x.zarr"))
    metadata = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    assert metadata["attributes"]["diffpir"]["source"] == str(root)
