"""Fixtures shared by the whole suite: reference test vectors, a real S3 server (SeaweedFS), a tiny prior, small image
folders, a job factory, one torch thread per test, GPU skipping."""

import importlib.util
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from diffpir_core.models import build_unet, save_prior
from diffpir_core.runs.job import Job, parse_job
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
    yield {
        "endpoint_url": f"http://{host}:{port}",
        "key": "moto",
        "secret": "moto",
        "client_kwargs": {"region_name": "eu-west-1"},
    }
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


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread per test: on a busy 2-core machine a 2-thread OpenMP team makes the tiny networks of the
    suite up to 30x slower, and no bound in it depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_images(folder: Path, count: int, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` smooth random RGB PNGs of ``size``² in ``folder``; returns pixels by image id."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for i in range(count):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        images[f"img{i:03d}.png"] = pixels
    return images


@pytest.fixture(scope="session")
def image_writer() -> Callable[..., dict[str, np.ndarray]]:
    """:func:`write_images` as a fixture (test modules cannot import conftest)."""
    return write_images


@pytest.fixture(scope="session")
def images_8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 32×32 images (two shards of 4)."""
    folder = tmp_path_factory.mktemp("images8")
    write_images(folder, 8)
    return folder


@pytest.fixture
def make_job(tiny_prior: Path, tmp_path: Path) -> Callable[..., Job]:
    """Build a validated tiny job: SR ×2 evaluate, 3 sampler steps, shards of 4, CPU, overrides as kwargs."""

    def factory(input: str | Path, output: str | Path | None = None, **overrides: Any) -> Job:
        data: dict[str, Any] = {
            "input": str(input),
            "output": str(output or tmp_path / "out"),
            "mode": "evaluate",
            "task": {"kind": "sr", "scale": 2, "noise_sigma": 0.05},
            "prior": str(tiny_prior),
            "sampler": {"iter_num": 3},
            "shard_size": 4,
            "batch_size": 2,
            "device": "cpu",
            "retry_delay_s": 0.05,
            "report": {"samples": 2},
        }
        data.update(overrides)
        return parse_job(data)

    return factory


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def spawn_cli_run() -> Callable[[Path, dict[str, str]], subprocess.Popen]:
    """Start ``diffpir run JOB_FILE`` in a child process with ``env`` (stderr piped, for the tests that kill it)."""

    def spawn(job_file: Path, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "from diffpir_flow.cli.app import main; main()", "run", str(job_file)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    return spawn
