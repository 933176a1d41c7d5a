"""Fixtures for the orchestration tests: one Prefect test server for the session (heartbeat off), a tiny
random prior, small image folders, S3 buckets (on the root conftest's SeaweedFS server), and a job factory.

Everything is real: Prefect's API (``prefect_test_harness``), S3 (SeaweedFS on loopback), Dask
(LocalCluster on loopback). Images are 32×32 and the sampler takes 3 steps, so a shard costs
a few tens of milliseconds of compute and the tests measure orchestration, not diffusion.
"""

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3fs
import torch
from PIL import Image

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness

from diffpir_core.models import load_prior
from diffpir_core.runs.batches import inputs_from_arrays, restore_batchwise, synthesise
from diffpir_core.runs.job import Job, parse_job

# One intra-op thread: on a small shared machine PyTorch's default thread pool makes these tiny
# convolutions ~30x slower (measured: 21.8 s vs 0.6 s for one 4-image shard on 2 loaded cores).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # flows apply the job's default threads, which honour it (and Dask workers inherit it)


@pytest.fixture(scope="session", autouse=True)
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server for the whole session; returns its API URL (subprocesses can be pointed at it)."""
    storage = tmp_path_factory.mktemp("prefect-results")
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(
            {
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,  # saves ~1 s per sync flow run
                PREFECT_LOCAL_STORAGE_PATH: storage,
                PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore",
            }
        ):
            from prefect.settings import PREFECT_API_URL

            yield PREFECT_API_URL.value()


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


@pytest.fixture(scope="session")
def restore_alone(tiny_prior: Path) -> Callable[[Job, str, np.ndarray], np.ndarray]:
    """``restore_alone(job, image_id, pixels)``: what an evaluate-mode ``job`` restores for one image on its own,
    its measurement synthesised and restored with ``diffpir_core.runs.batches`` exactly as a shard task does (batch of
    one): the reference that a result exported under ``image_id`` must equal pixel for pixel."""
    unet = load_prior(str(tiny_prior)).unet

    def restore(job: Job, image_id: str, pixels: np.ndarray) -> np.ndarray:
        arrays = synthesise(job.task, [image_id], pixels[None].copy(), job.seed, job.storage_options)
        inputs = inputs_from_arrays(job.task, [image_id], arrays)
        restored, _ = restore_batchwise(
            unet, inputs, job.task, job.sampler_config(), seed=job.seed, batch_size=1, device="cpu", fit=job.fit()
        )
        return restored[0]

    return restore


@pytest.fixture
def s3_bucket(s3_options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A fresh bucket ``s3://<name>`` and the s3fs storage options that reach it."""
    options = dict(s3_options)
    name = f"orch-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(name)
    return f"s3://{name}", options
