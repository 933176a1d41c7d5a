"""Fixtures for the orchestration tests: one Prefect test server for the session (heartbeat off), a tiny
random prior (root conftest), S3 buckets (on the root conftest's SeaweedFS server) and the reference restoration of
one image; image folders and the job factory are in the root conftest.

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
from diffpir_core.runs.job import Job

# One intra-op thread: on a small shared machine PyTorch's default thread pool makes these tiny
# convolutions ~30x slower (measured: 21.8 s vs 0.6 s for one 4-image shard on 2 loaded cores).
torch.set_num_threads(1)
os.environ.setdefault(
    "OMP_NUM_THREADS", "1"
)  # flows apply the job's default threads, which honour it (and Dask workers inherit it)


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
