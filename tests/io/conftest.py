"""Fixtures for the data-layer tests: fresh S3 buckets (on the root conftest's S3 server) and small image folders."""

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
import s3fs
from PIL import Image


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
