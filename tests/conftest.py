"""Fixtures shared by the whole suite: reference test vectors, a real S3 server (SeaweedFS), GPU skipping."""

import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from diffpir_core.models import build_unet, save_prior
from diffpir_flow.cli.seaweed import running_s3

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


# Distinctive, so that tests can prove credentials never land in a store, a report or Prefect's database.
S3_KEY = "diffpir-test-key"
S3_SECRET = "diffpir-test-secret-9f3c"
AWS_ENV = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's S3 server: SeaweedFS (``weed mini``) on free loopback ports, its files in a session
    folder, started once. It enforces :data:`S3_KEY`/:data:`S3_SECRET`, which this process (and every process it
    starts: Dask workers, Prefect workers) holds in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for the
    session, as a production worker would; jobs never carry them in ``storage_options``. SeaweedFS plays S3 in
    every test but one: AWS keeps keys with ``.``, ``..`` or empty path segments (``raw/../evil.png``) as keys of
    their own, SeaweedFS (a file-system namespace) refuses or collapses them, so the test that crafts such keys
    uses :func:`literal_keys_s3_options` (moto)."""
    with running_s3(tmp_path_factory.mktemp("seaweedfs"), S3_KEY, S3_SECRET) as server:
        yield server.endpoint


@pytest.fixture(scope="session")
def s3_credentials() -> dict[str, str]:
    """The session's S3 credentials by environment variable name (to search stores and databases for them)."""
    return dict(AWS_ENV)


@pytest.fixture(scope="session")
def s3_options(s3_endpoint: str) -> dict:
    """s3fs storage options for the session's server: no credentials (s3fs takes them from the environment)."""
    return {"endpoint_url": s3_endpoint, "client_kwargs": {"region_name": "eu-west-1"}, "use_listings_cache": False}


@pytest.fixture(scope="session")
def literal_keys_s3_options() -> Iterator[dict]:
    """s3fs options for a moto S3 server on 127.0.0.1 (random port): S3's literal object keys, for the one test that
    needs keys SeaweedFS cannot hold (see :func:`s3_endpoint`). moto accepts any credentials."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"endpoint_url": f"http://{host}:{port}", "key": "moto", "secret": "moto", "client_kwargs": {"region_name": "eu-west-1"}}
    server.stop()


TINY_UNET = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,1",
    "attention_resolutions": "",
    "learn_sigma": True,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 0.35 M-parameter guided-diffusion UNet for 32×32 images, saved as safetensors."""
    torch.manual_seed(0)
    unet = build_unet(**TINY_UNET)
    return save_prior(unet, tmp_path_factory.mktemp("prior") / "tiny.safetensors", TINY_UNET)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
