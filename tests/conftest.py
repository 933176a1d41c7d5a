"""Fixtures shared by the whole suite: reference test vectors, a real S3 API (moto), GPU skipping."""

import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from moto.server import ThreadedMotoServer

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPACT_TESTVECTORS = REPO_ROOT / "tests" / "data" / "testvectors"
"""The in-repo reference test vectors in compact form (see its README.md and compact.py)."""


def _compact_testvectors() -> ModuleType:
    """``tests/data/testvectors/compact.py``, imported by path (the suite uses importlib import mode)."""
    spec = importlib.util.spec_from_file_location("diffpir_compact_testvectors", COMPACT_TESTVECTORS / "compact.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def testvectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of reference test vectors: the full set where ``DIFFPIR_TESTVECTORS`` names an existing
    folder, otherwise the in-repo compact set expanded into a session folder with the full set's layout
    (every tensor recomputed bit-identically and checked against the reference's SHA-256)."""
    env = os.environ.get("DIFFPIR_TESTVECTORS")
    if env and Path(env).is_dir():
        return Path(env)
    return _compact_testvectors().expand(tmp_path_factory.mktemp("testvectors"))


@pytest.fixture(scope="session")
def reference_dir(testvectors: Path) -> Path:
    """``testvectors/diffpir_reference``: the reference sampler's own outputs on a tiny UNet."""
    path = testvectors / "diffpir_reference"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the DiffPIR reference vectors are needed for this test")
    return path


# Distinctive, so that tests can prove credentials never land in a store or a report.
S3_KEY = "diffpir-test-key"
S3_SECRET = "diffpir-test-secret-9f3c"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (random port), started once for the session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_options(s3_endpoint: str) -> dict:
    """s3fs storage options for the moto server (credentials are passed, never stored)."""
    return {
        "endpoint_url": s3_endpoint,
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"region_name": "eu-west-1"},
        "use_listings_cache": False,
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
