"""``diffpir ingest`` and ``diffpir export`` end to end through their typer commands."""

import numpy as np
import typer
from PIL import Image
from typer.testing import CliRunner

from diffpir_flow.cli import data as cli_data


def _app() -> typer.Typer:
    """Only the data commands, registered as ``diffpir_flow.cli/app.py`` does (independent of the other command
    groups)."""
    app = typer.Typer()
    cli_data.register(app)
    return app


def test_ingest_then_export(rgb_folder, tmp_path):
    root, expected = rgb_folder
    (root / "junk.png").write_bytes(b"")
    runner, app = CliRunner(), _app()
    result = runner.invoke(
        app,
        [
            "ingest",
            str(root),
            str(tmp_path / "s.zarr"),
            "--shard-size",
            "4",
            "--size-policy",
            "center_crop",
            "--size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ingested 11 images" in result.output and "quarantined junk.png: empty file (0 bytes)" in result.output

    again = runner.invoke(app, ["ingest", str(root), str(tmp_path / "s.zarr")])
    assert again.exit_code == 2 and "--overwrite" in again.output

    result = runner.invoke(app, ["export", str(tmp_path / "s.zarr"), str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    assert "exported 11 PNGs" in result.output
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "sub" / "b2.png")), expected["sub/b2.png"])
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "png" / "a00.png")), expected["a00.png"][4:20, 8:24]
    )


def test_ingest_names_the_files_it_ignores_and_why(tmp_path):
    """A GIF, a dot file and a symlinked folder of images are left out, each named with why (they were only counted,
    the folder not even as what it is)."""
    images, root = tmp_path / "elsewhere", tmp_path / "in"
    images.mkdir()
    root.mkdir()
    pixels = np.zeros((8, 8, 3), np.uint8)
    for i in range(3):
        Image.fromarray(pixels).save(images / f"linked{i}.png")
    Image.fromarray(pixels).save(root / "kept.png")
    Image.fromarray(pixels).save(root / "anim.gif")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "linked").symlink_to(images, target_is_directory=True)
    result = CliRunner().invoke(_app(), ["ingest", str(root), str(tmp_path / "s.zarr")])
    assert result.exit_code == 0, result.output
    assert "ingested 1 images" in result.output and "ignored 3 file(s)" in result.output
    assert "  anim.gif: .gif: not an image format read here (" in result.output
    assert "  .DS_Store: a hidden file" in result.output
    assert "  linked: a link to a folder, not followed: give that folder as an input of its own" in result.output
