"""Downloads against a real HTTP server on 127.0.0.1: resume, checksum, HTML pages, source fallback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from diffpir_core.models import PRESETS, ChecksumError, DownloadError, download, download_preset, load_prior
from diffpir_core.models.download import part_path
from diffpir_core.models.presets import Source

PAGE = (
    b"<!DOCTYPE html><html><head><title>Sorry, you can't view or download this file at this time.</title>"
    b"</head></html>"
)


@pytest.fixture
def payload(tiny_checkpoint: Path) -> bytes:
    return tiny_checkpoint.read_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_checks_sha256_and_renames_into_place(
    file_server, payload: bytes, tmp_path: Path, tiny_config: dict
) -> None:
    file_server.files["/m.pt"] = payload
    dest = tmp_path / "models" / "m.pt"
    assert download(file_server.url("/m.pt"), dest, sha256=_sha(payload).upper(), progress=False) == dest
    assert dest.read_bytes() == payload
    assert not part_path(dest).exists()
    assert file_server.ranges == [None]
    assert load_prior(dest, config=tiny_config).sha256 == _sha(payload)


def test_interrupted_download_resumes_with_a_range_request(file_server, payload: bytes, tmp_path: Path) -> None:
    cut = len(payload) // 3
    file_server.files["/m.pt"] = payload
    file_server.cut_after["/m.pt"] = cut
    dest = tmp_path / "m.pt"
    with pytest.raises(DownloadError, match=rf"stopped after {cut} of {len(payload)} bytes.*run the same command"):
        download(file_server.url("/m.pt"), dest, sha256=_sha(payload), progress=False)
    assert not dest.exists()
    assert part_path(dest).read_bytes() == payload[:cut]

    download(file_server.url("/m.pt"), dest, sha256=_sha(payload), progress=False)
    assert file_server.ranges == [None, f"bytes={cut}-"]
    assert dest.read_bytes() == payload and not part_path(dest).exists()


def test_server_without_range_support_restarts_from_zero(file_server, payload: bytes, tmp_path: Path) -> None:
    file_server.files["/m.pt"] = payload
    file_server.honour_range = False
    dest = tmp_path / "m.pt"
    part_path(dest).write_bytes(b"stale bytes from another file")
    download(file_server.url("/m.pt"), dest, sha256=_sha(payload), progress=False)
    assert file_server.ranges == ["bytes=29-"]
    assert dest.read_bytes() == payload


def test_complete_part_file_is_finished_without_refetching(file_server, payload: bytes, tmp_path: Path) -> None:
    file_server.files["/m.pt"] = payload
    dest = tmp_path / "m.pt"
    part_path(dest).write_bytes(payload)
    download(file_server.url("/m.pt"), dest, sha256=_sha(payload), progress=False)
    assert file_server.ranges == [f"bytes={len(payload)}-"]  # answered 416: nothing left to send
    assert dest.read_bytes() == payload


def test_wrong_checksum_deletes_the_file(file_server, payload: bytes, tmp_path: Path) -> None:
    file_server.files["/m.pt"] = payload
    dest = tmp_path / "m.pt"
    with pytest.raises(ChecksumError, match=rf"sha256 {_sha(payload)}, expected {'ab' * 32}"):
        download(file_server.url("/m.pt"), dest, sha256="ab" * 32, progress=False)
    assert not dest.exists() and not part_path(dest).exists()


def test_html_page_instead_of_the_file_is_rejected(file_server, tmp_path: Path) -> None:
    file_server.files["/uc"] = PAGE
    file_server.content_types["/uc"] = "text/html; charset=utf-8"
    dest = tmp_path / "diffusion_ffhq_10m.pt"
    with pytest.raises(DownloadError, match=r"answered with a web page.*can't view or download this file"):
        download(file_server.url("/uc"), dest, progress=False)
    assert not dest.exists() and not part_path(dest).exists()


def test_http_error_is_reported(file_server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"answered HTTP 404"):
        download(file_server.url("/missing.pt"), tmp_path / "x.pt", progress=False)


def test_preset_download_falls_back_to_the_next_source(file_server, payload: bytes, tmp_path: Path) -> None:
    file_server.files["/mirror/diffusion_ffhq_10m.pt"] = payload
    sources = [
        Source(url=file_server.url("/gone.pt"), kind="http", note="dead mirror"),
        Source(url=file_server.url("/mirror/diffusion_ffhq_10m.pt"), kind="http", note="good mirror"),
    ]
    ffhq = PRESETS["ffhq_256"]
    dest = download_preset(ffhq, model_dir=tmp_path, sources=sources, sha256=_sha(payload), progress=False)
    assert dest == tmp_path / "diffusion_ffhq_10m.pt" and dest.read_bytes() == payload
    assert download_preset(ffhq, model_dir=tmp_path, sources=[], progress=False) == dest  # already there


def test_preset_download_lists_every_failure(file_server, tmp_path: Path) -> None:
    file_server.files["/page"] = PAGE
    sources = [
        Source(url=file_server.url("/gone.pt"), kind="http", note="dead mirror"),
        Source(url=file_server.url("/page"), kind="gdrive", note="drive"),
    ]
    with pytest.raises(DownloadError) as info:
        download_preset(PRESETS["imagenet_256"], model_dir=tmp_path, sources=sources, progress=False)
    message = str(info.value)
    assert "/gone.pt (dead mirror): " in message and "HTTP 404" in message
    assert "/page (drive): " in message and "web page" in message
    assert f"put it in {tmp_path}" in message
    with pytest.raises(DownloadError, match="ships with the package"):
        download_preset(PRESETS["demo"], progress=False)
