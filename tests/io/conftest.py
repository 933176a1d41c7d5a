"""Fixtures for the data-layer tests: fresh S3 buckets (on the root conftest's S3 server)."""

import uuid

import pytest
import s3fs


@pytest.fixture
def s3_bucket(s3_options: dict) -> str:
    """A fresh, empty bucket; returns ``s3://<name>``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_options).mkdir(name)
    return f"s3://{name}"
