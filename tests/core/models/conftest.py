"""Fixtures of the models tests: small real checkpoints and a real HTTP file server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from diffpir_core.models import random_unet

# A small guided-diffusion UNet (about 0.3 M parameters): big enough to have every block type.
TINY_CONFIG = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "16",
    "num_head_channels": 16,
    "learn_sigma": True,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
}


@pytest.fixture(scope="session")
def small_vector_path(testvectors: Path) -> Callable[[str], Path]:
    """Path of ``guided_unet_small_<name>.pt`` in the shared test vectors."""
    return lambda name: testvectors / f"guided_unet_small_{name}.pt"


@pytest.fixture
def tiny_config() -> dict[str, object]:
    """The create_model kwargs of the tiny test UNet (a fresh copy per test)."""
    return dict(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    """Random weights of ``TINY_CONFIG`` (seeded), with the zero-initialised layers refilled."""
    unet = random_unet(seed=0, zero_std=0.05, **TINY_CONFIG)
    return {k: v.clone() for k, v in unet.state_dict().items()}


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_state_dict: dict[str, torch.Tensor]) -> Path:
    """A flat state_dict ``.pt`` like the official files, of the tiny UNet."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_state_dict, path)
    return path


@dataclass
class FileServer:
    """What the test HTTP server serves and what it was asked.

    ``files``: URL path -> bytes. ``cut_after``: URL path -> byte count after which the next
    response for that path is cut (the connection closes mid-body, once). ``ranges`` records the
    ``Range`` header of every request (``None`` when absent). ``honour_range=False`` answers every
    request with the whole file, as servers without range support do.
    """

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    honour_range: bool = True

    def url(self, path: str) -> str:
        return self.base_url + path


def _handler(server_state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            data = server_state.files.get(self.path)
            server_state.ranges.append(self.headers.get("Range"))
            if data is None:
                self.send_error(404, "no such file")
                return
            start, status = 0, 200
            header = self.headers.get("Range")
            if header and server_state.honour_range:
                start = int(header.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Type", server_state.content_types.get(self.path, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            cut = server_state.cut_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A real ``http.server`` on 127.0.0.1 (random port) with Range support, stopped after the test."""
    state = FileServer(base_url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
