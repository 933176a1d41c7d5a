"""``diffpir models list | download | verify`` through typer's runner, with a real local HTTP server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from diffpir_core.models import PRESETS, Preset
from diffpir_flow.cli.models import register


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DIFFPIR_MODEL_DIR", str(tmp_path / "models"))
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["models", *args])


def test_list_shows_presets_sources_and_state(cli, tmp_path: Path) -> None:
    result = cli("list")
    assert result.exit_code == 0, result.output
    assert f"model directory: {tmp_path / 'models'}" in result.output
    assert "ffhq_256:" in result.output and "imagenet_256:" in result.output and "demo:" in result.output
    assert "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt" in result.output
    assert "third-party mirror" in result.output
    assert f"{tmp_path / 'models' / 'diffusion_ffhq_10m.pt'}  [missing]" in result.output
    assert "552,814,086" in result.output


def test_download_with_url_and_checksum(cli, file_server, tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    file_server.files["/ffhq.pt"] = data
    digest = hashlib.sha256(data).hexdigest()
    bad = cli("download", "ffhq_256", "--url", file_server.url("/ffhq.pt"), "--sha256", "0" * 64, "-q")
    assert bad.exit_code == 1
    assert f"gave a file with sha256 {digest}, expected {'0' * 64}" in bad.output
    assert not (tmp_path / "models" / "diffusion_ffhq_10m.pt").exists()

    good = cli("download", "ffhq_256", "--url", file_server.url("/ffhq.pt"), "--sha256", digest, "-q")
    assert good.exit_code == 0, good.output
    assert f"sha256 {digest}" in good.output
    assert "does not have the tensor names and shapes of ffhq_256" in good.output  # the tiny file is no FFHQ model
    assert (tmp_path / "models" / "diffusion_ffhq_10m.pt").read_bytes() == data


def test_download_unknown_name_fails_clearly(cli) -> None:
    result = cli("download", "sd15")
    assert result.exit_code == 1 and "unknown prior 'sd15'" in result.output


def test_verify_reports_the_matching_preset(
    cli, tiny_checkpoint: Path, tiny_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = Preset(name="tiny_cli", description="t", filename="t.pt", config=tiny_config)
    monkeypatch.setitem(PRESETS, "tiny_cli", preset)
    result = cli("verify", str(tiny_checkpoint))
    assert result.exit_code == 0, result.output
    assert "matches preset tiny_cli" in result.output and "OK (no official sha256" in result.output
    wrong = cli("verify", str(tiny_checkpoint), "--preset", "imagenet_256")
    assert wrong.exit_code == 1 and "expected imagenet_256, but the file is tiny_cli" in wrong.output


def test_verify_rejects_html_and_unknown_architectures(cli, tmp_path: Path, tiny_checkpoint: Path) -> None:
    page = tmp_path / "ffhq_10m.pt"
    page.write_bytes(b"\n<html><head><title>Google Drive - Quota exceeded</title></head></html>")
    result = cli("verify", str(page))
    assert result.exit_code == 1 and "HTML web page (page title: 'Google Drive - Quota exceeded')" in result.output
    unknown = cli("verify", str(tiny_checkpoint))
    assert unknown.exit_code == 1 and "match no preset; closest is" in unknown.output
