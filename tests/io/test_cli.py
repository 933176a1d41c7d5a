"""``diffpir ingest`` and ``diffpir export`` end to end through their typer commands."""

import numpy as np
import typer
from PIL import Image
from typer.testing import CliRunner

from diffpir_flow.cli import data as cli_data


def _app() -> typer.Typer:
    """Only the data commands, registered as ``diffpir_cli/app.py`` does (independent of the other command groups)."""
    app = typer.Typer()
    cli_data.register(app)
    return app


def test_ingest_then_export(rgb_folder, tmp_path):
    root, expected = rgb_folder
    (root / "junk.png").write_bytes(b"")
    runner, app = CliRunner(), _app()
    result = runner.invoke(app, ["ingest", str(root), str(tmp_path / "s.zarr"), "--shard-size", "4", "--size-policy", "center_crop", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert "ingested 11 images" in result.output and "quarantined junk.png: empty file (0 bytes)" in result.output

    again = runner.invoke(app, ["ingest", str(root), str(tmp_path / "s.zarr")])
    assert again.exit_code == 2 and "--overwrite" in again.output

    result = runner.invoke(app, ["export", str(tmp_path / "s.zarr"), str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    assert "exported 11 PNGs" in result.output
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "sub" / "b2.png")), expected["sub/b2.png"])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "a00.png")), expected["a00.png"][4:20, 8:24])
