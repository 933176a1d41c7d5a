"""Fixtures for the data-layer tests: a real S3 API (moto server on 127.0.0.1) and small image folders."""

import io
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from PIL import Image

# Distinctive so tests can prove it never lands in a store.
S3_KEY = "diffpir-test-key"
S3_SECRET = "diffpir-test-secret-9f3c"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (random port), for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_options(s3_endpoint: str) -> dict:
    """s3fs storage options for the moto server (the credentials are passed, never stored)."""
    return {
        "endpoint_url": s3_endpoint,
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"region_name": "eu-west-1"},
        "use_listings_cache": False,
    }


@pytest.fixture
def s3_bucket(s3_options: dict) -> str:
    """A fresh, empty bucket; returns ``s3://<name>``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_options).mkdir(name)
    return f"s3://{name}"


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **save_kwargs: object) -> bytes:
    """Encode an array or Pillow image in ``fmt`` (PNG, JPEG, TIFF, WEBP, BMP)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


@pytest.fixture
def encode_image():
    """The :func:`encode` helper, as a fixture (test modules cannot import conftest)."""
    return encode


@pytest.fixture
def rgb_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder with 11 RGB PNGs in two sizes (three in a subfolder) and the expected pixels by id."""
    rng = np.random.default_rng(7)
    root = tmp_path / "rgb"
    (root / "sub").mkdir(parents=True)
    expected = {f"a{i:02d}.png": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(8)}
    expected |= {f"sub/b{i}.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(3)}
    for image_id, pixels in expected.items():
        (root / image_id).write_bytes(encode(pixels))
    return root, expected
