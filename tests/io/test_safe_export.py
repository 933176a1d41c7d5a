"""Safe export: traversal, colliding and glob-like ids through ingest and export, locally and on S3 (SeaweedFS; moto
for the keys it cannot hold).

Every round trip checks the two promises: nothing is written outside the destination, and every image comes back
with its pixels (its file is the one ``ids.csv`` names).
"""

import csv
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import s3fs
from PIL import Image
from typer.testing import CliRunner

from diffpir_core.io import DatasetStore, ExportConflict, ImageMeta, StoreError, export_images, ingest, png_names
from diffpir_core.io.csv_text import safe_cell
from diffpir_flow.cli.app import app

# Ids a Zarr store can hold: traversal, absolute, control characters, and names that clash once made safe.
UNSAFE_IDS = [
    "../evil.png",
    "/abs.png",
    "a/../../x.png",
    "a/x.png",
    "./dot.png",
    "nul\x00.png",
    "new\nline.png",
    "new_line.png",
    "..",
    "a.tif",
    "a.png",
    "a.png.png",
    "x",
    "x.png/y.png",
    "ids.csv/z.png",
    "=cmd.png",
    "-neg.png",
]
# File names a filesystem and a bucket can hold that fsspec would take as glob patterns.
GLOB_LIKE_NAMES = ["photo [1].png", "photo 1.png", "x[0-9].png", "x5.png", "*star.png", "?.png"]


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _mapping(text: str) -> dict[str, str]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "file"]
    return dict(rows[1:])


def _crafted_store(uri: str, ids: list[str], storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """A complete dataset store holding ``ids`` (as a store made by other tools may); returns their pixels."""
    pixels = np.random.default_rng(3).integers(0, 256, (len(ids), 8, 8, 3), dtype=np.uint8)
    store = DatasetStore.create(uri, storage_options, shard_size=4)
    metas = [ImageMeta(id=i, source=f"test:{i}", sha256="0" * 64, source_shape=(8, 8), source_mode="RGB") for i in ids]
    store.append((8, 8), pixels, metas)
    store.mark_complete(groups=["8x8"], counts={"images": len(ids), "quarantined": 0, "ignored": 0})
    return dict(zip(ids, pixels, strict=True))


def _check_export(summary, expected: dict[str, np.ndarray], read) -> None:
    """Every id is in ids.csv exactly as png_names maps it, and its file holds its pixels."""
    names = png_names(list(expected))
    assert len(set(names.values())) == len(expected)
    assert _mapping(read("ids.csv").decode()) == {safe_cell(i): safe_cell(name) for i, name in names.items()}
    assert summary.exported == len(expected)
    for image_id, pixels in expected.items():
        np.testing.assert_array_equal(_pixels(read(names[image_id])), pixels, err_msg=repr(image_id))


def test_png_names_are_relative_paths_inside_the_destination():
    names = png_names(UNSAFE_IDS)
    for name in names.values():
        parts = name.split("/")
        assert not name.startswith("/") and "" not in parts and "." not in parts and ".." not in parts, name
        assert not any(ord(char) < 32 or 127 <= ord(char) < 160 for char in name), repr(name)
    assert names["../evil.png"] == "evil.png" and names["/abs.png"] == "abs.png" and names["nul\x00.png"] == "nul_.png"
    assert names["./dot.png"] == "dot.png" and names[".."] == "_.png" and names["ids.csv/z.png"] == "ids.csv_/z.png"
    assert names["x.png/y.png"] == "x.png/y.png" and names["-neg.png"] == "-neg.png"


def test_png_names_keep_both_sides_of_every_clash_with_a_stable_suffix():
    names = png_names(UNSAFE_IDS)
    assert len(set(names.values())) == len(UNSAFE_IDS)

    def hashed(image_id: str, stem: str) -> str:
        return f"{stem}~{hashlib.sha256(image_id.encode()).hexdigest()[:8]}.png"

    # a.tif and a.png both want a.png, so they take their full id; a.png.png then clashes with a.png: both hashed
    assert (names["a.tif"], names["a.png"], names["a.png.png"]) == (
        "a.tif.png",
        hashed("a.png", "a"),
        hashed("a.png.png", "a.png"),
    )
    assert names["a/../../x.png"] == hashed("a/../../x.png", "a/x") and names["a/x.png"] == hashed("a/x.png", "a/x")
    assert names["new\nline.png"] == hashed("new\nline.png", "new_line") and names["new_line.png"] == hashed(
        "new_line.png", "new_line"
    )
    assert names["x"] == hashed("x", "x")  # x.png is a folder (of x.png/y.png), so the file x.png cannot exist
    assert png_names(UNSAFE_IDS[::-1]) == names  # independent of the order
    with pytest.raises(ValueError, match="ids must be unique"):
        png_names(["a.png", "b.png", "a.png"])


def test_unsafe_ids_from_a_zarr_input_round_trip_inside_the_destination(tmp_path):
    expected = _crafted_store(str(tmp_path / "crafted.zarr"), UNSAFE_IDS)
    summary = ingest(str(tmp_path / "crafted.zarr"), str(tmp_path / "s.zarr"), shard_size=4)
    assert summary.ingested == len(UNSAFE_IDS)
    out = tmp_path / "deep" / "down" / "out"
    before = _files(tmp_path)

    summary = export_images(str(tmp_path / "s.zarr"), str(out))

    written = _files(tmp_path) - before
    assert written and all(out in path.parents for path in written), sorted(map(str, written - _files(out)))
    assert len(written) == len(UNSAFE_IDS) + 1  # one file per image, and ids.csv
    _check_export(summary, expected, lambda name: (out / name).read_bytes())
    names = png_names(UNSAFE_IDS)
    renamed = {i: n for i, n in names.items() if n != os.path.splitext(i)[0] + ".png"}
    assert summary.renamed == len(renamed) and summary.renamed_sample == dict(sorted(renamed.items()))
    assert "'=cmd.png,'=cmd.png\n" in (out / "ids.csv").read_text()  # no formula for a spreadsheet to run
    assert summary.mapping == str(out / "ids.csv")


def test_glob_like_and_non_utf8_file_names_are_ingested_literally(tmp_path, encode_image):
    root = tmp_path / "in [2024]"
    root.mkdir()
    rng = np.random.default_rng(4)
    expected = {name: rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for name in [*GLOB_LIKE_NAMES, "a\nb.png"]}
    for name, pixels in expected.items():
        (root / name).write_bytes(encode_image(pixels))
    latin1 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as handle:  # a Latin-1 name, not UTF-8
        handle.write(encode_image(latin1))
    expected["caf\\xe9.png"] = latin1

    summary = ingest(str(root), str(tmp_path / "s.zarr"), shard_size=3)

    assert (summary.ingested, summary.quarantined) == (len(expected), 0)
    store = DatasetStore.open(str(tmp_path / "s.zarr"))
    images = dict(store.iter_images())
    assert images.keys() == expected.keys()
    for image_id, pixels in expected.items():
        np.testing.assert_array_equal(images[image_id], pixels, err_msg=repr(image_id))
    summary = export_images(str(tmp_path / "s.zarr"), str(tmp_path / "out"))
    assert (tmp_path / "out" / "photo [1].png").is_file() and (tmp_path / "out" / "a_b.png").is_file()
    _check_export(summary, expected, lambda name: (tmp_path / "out" / name).read_bytes())


def test_s3_unsafe_glob_like_and_colliding_keys_round_trip(literal_keys_s3_options, tmp_path, encode_image):
    s3_options = literal_keys_s3_options
    fs = s3fs.S3FileSystem(**s3_options)
    s3_bucket = f"s3://literal-{tmp_path.name[-12:].lower().replace('_', '-')}"
    fs.mkdir(s3_bucket)
    keys = [*GLOB_LIKE_NAMES, "../evil.png", "./dot.png", "/dbl.png", "dbl.png", "a.tif", "a.png", "a.png.png"]
    rng = np.random.default_rng(5)
    expected = {key: rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for key in keys}
    for key, pixels in expected.items():  # S3 keeps "raw/../evil.png" and "raw//dbl.png" as keys of their own
        fs.pipe_file(f"{s3_bucket}/raw/{key}", encode_image(pixels, "TIFF" if key.endswith(".tif") else "PNG"))

    summary = ingest(f"{s3_bucket}/raw", f"{s3_bucket}/s.zarr", shard_size=4, storage_options=s3_options)
    assert (summary.ingested, summary.quarantined, summary.ignored) == (len(keys), 0, 0)

    summary = export_images(f"{s3_bucket}/s.zarr", f"{s3_bucket}/out", storage_options=s3_options)
    _check_export(summary, expected, lambda name: fs.cat_file(f"{s3_bucket}/out/{name}"))
    bucket = s3_bucket.removeprefix("s3://")
    exported = [path[len(bucket) + 1 :] for path in fs.find(f"{s3_bucket}/out")]
    assert len(exported) == len(keys) + 1
    for key in exported:  # keys a sync to disk would turn into paths outside the folder
        assert key.startswith("out/") and not {"", ".", ".."} & set(key.split("/")), key

    out = tmp_path / "deep" / "out"
    summary = export_images(f"{s3_bucket}/s.zarr", str(out), storage_options=s3_options, out_storage_options={})
    assert _files(tmp_path) == _files(out) and len(_files(out)) == len(keys) + 1
    _check_export(summary, expected, lambda name: (out / name).read_bytes())


def test_s3_zarr_input_with_unsafe_ids_exports_inside_a_local_folder(s3_bucket, s3_options, tmp_path):
    expected = _crafted_store(f"{s3_bucket}/crafted.zarr", UNSAFE_IDS, s3_options)
    ingest(f"{s3_bucket}/crafted.zarr", f"{s3_bucket}/s.zarr", storage_options=s3_options)
    out = tmp_path / "a" / "b" / "out"
    summary = export_images(f"{s3_bucket}/s.zarr", str(out), storage_options=s3_options, out_storage_options={})
    assert _files(tmp_path) == _files(out) and len(_files(out)) == len(UNSAFE_IDS) + 1
    _check_export(summary, expected, lambda name: (out / name).read_bytes())


def test_export_with_nothing_to_export_fails_with_what_to_do(rgb_folder, tmp_path):
    root, _ = rgb_folder
    ingest(str(root), str(tmp_path / "s.zarr"), shard_size=4)
    with pytest.raises(StoreError, match=r"has no array 'restored'; pass one of \['images'\] as array"):
        export_images(str(tmp_path / "s.zarr"), str(tmp_path / "out"), array="restored")
    store = DatasetStore.open(str(tmp_path / "s.zarr"), writable=True)
    for group in store.groups():
        store.create_array(group.name, "restored", (group.height, group.width, 3), "uint8")
    with pytest.raises(StoreError, match=r"no shard of 'restored' .* \(3 shards skipped\); let the job finish"):
        export_images(str(tmp_path / "s.zarr"), str(tmp_path / "out"), array="restored")

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "empty.png").write_bytes(b"")
    assert ingest(str(tmp_path / "junk"), str(tmp_path / "none.zarr")).quarantined == 1
    with pytest.raises(StoreError, match="holds no images"):
        export_images(str(tmp_path / "none.zarr"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_zarr_input_with_a_repeated_id_is_refused(tmp_path):
    _crafted_store(str(tmp_path / "twice.zarr"), ["a.png", "b.png", "a.png"])
    with pytest.raises(StoreError, match="holds the id 'a.png' twice"):
        ingest(str(tmp_path / "twice.zarr"), str(tmp_path / "s.zarr"))


def test_export_never_replaces_files_without_overwrite_and_checks_before_writing(tmp_path):
    """A destination holding the user's ``ids.csv`` and a PNG of an exported name: the export writes nothing and names
    them with the flag (it replaced them silently); a folder where a PNG goes is refused even with --overwrite,
    before any file is written (it gave a traceback after a half-done export)."""
    _crafted_store(str(tmp_path / "s.zarr"), [f"img{i}.png" for i in range(7)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "ids.csv").write_text("the user's own table\n")
    for i in (3, 4, 5, 6, 1, 2):
        (out / f"img{i}.png").write_bytes(b"the user's own picture")
    (out / "notes.txt").write_text("unrelated")
    before = {path: path.read_bytes() for path in _files(out)}
    runner = CliRunner()
    refused = runner.invoke(app, ["export", str(tmp_path / "s.zarr"), str(out)])
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    message = " ".join(refused.output.replace("│", " ").split())
    assert (
        f"{out} already holds 7 file(s) this export would replace: ids.csv, img1.png, img2.png, img3.png, img4.png "
        "and "
        "2 more; pass --overwrite to replace them, or export into an empty folder"
    ) in message, refused.output
    assert {path: path.read_bytes() for path in _files(out)} == before

    replaced = runner.invoke(app, ["export", str(tmp_path / "s.zarr"), str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert (
        _pixels((out / "img3.png").read_bytes()).shape == (8, 8, 3) and (out / "notes.txt").read_text() == "unrelated"
    )
    assert "img0.png" in (out / "ids.csv").read_text()

    clash = tmp_path / "clash"
    (clash / "img5.png").mkdir(parents=True)
    with pytest.raises(ExportConflict, match=r"1 of its entries are in the way .*: img5.png/; move them away"):
        export_images(str(tmp_path / "s.zarr"), str(clash), overwrite=True)
    assert _files(clash) == set()
