"""The production stack of ``scripts/stack.sh`` for the fault tests: PostgreSQL, a Prefect server on it, two process
workers, SeaweedFS, a Dask scheduler and two workers, each its own process, on free loopback ports, started once per
session and stopped after it. The tests deploy ``restore`` to its work pool and run tiny jobs (32×32 images, the tiny
random prior, a few sampler steps) from S3 to S3 with the credentials in the Secret block ``diffpir-s3``.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
import s3fs
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from diffpir_core.models import load_prior
from diffpir_core.runs.batches import inputs_from_arrays, restore_batchwise, synthesise
from diffpir_core.runs.job import parse_job
from diffpir_flow.cli.seaweed import free_ports

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """A running stack: its folder, endpoints, S3 credentials (for this test process only) and deployment."""

    dir: Path
    env: dict[str, str]
    api: str
    s3: str
    dask: str
    credentials: dict[str, str]
    deployment_id: UUID | None = None
    prior: str = ""

    def script(self, command: str, timeout: float = 180) -> str:
        """Run ``scripts/stack.sh COMMAND``; its output."""
        done = subprocess.run(
            ["bash", "scripts/stack.sh", command],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def pid(self, name: str) -> int:
        return int((self.dir / "pids" / f"{name}.pid").read_text())

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the part ``name``: its process group where it leads one (its process and what it
        started)."""
        pid = self.pid(name)
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)

    def fs(self) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(endpoint_url=self.s3, key=self.credentials["key"], secret=self.credentials["secret"])

    def reader_options(self) -> dict[str, Any]:
        """Storage options for this test process's own reads (never given to a job)."""
        return {"endpoint_url": self.s3, **self.credentials}

    def job(self, name: str, images: int, **overrides: Any) -> dict[str, Any]:
        """A tiny S3 → S3 job on ``images`` fresh 32×32 images under ``s3://diffpir/<name>``: SR ×2 evaluate, 3 steps,
        one image per shard, no credentials in it."""
        fs = self.fs()
        for image_id, pixels in self.images(name, images).items():
            path = self.dir / "upload.png"
            Image.fromarray(pixels).save(path)
            fs.put_file(str(path), f"diffpir/{name}/in/{image_id}")
        job = {
            "input": f"s3://diffpir/{name}/in",
            "output": f"s3://diffpir/{name}/out",
            "mode": "evaluate",
            "task": {"kind": "sr", "scale": 2, "noise_sigma": 0.05},
            "prior": self.prior,
            "sampler": {"iter_num": 3},
            "shard_size": 1,
            "batch_size": 1,
            "device": "cpu",
            "retry_delay_s": 0.5,
            "report": {"samples": 1},
            "metrics": ["psnr"],
            "storage_options": {"endpoint_url": self.s3},
        }
        return job | overrides

    @staticmethod
    def images(name: str, count: int) -> dict[str, np.ndarray]:
        """The pixels of :meth:`job`'s images, by image id."""
        rng = np.random.default_rng(len(name))
        images = {}
        for i in range(count):
            coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            images[f"img{i:03d}.png"] = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.Resampling.BICUBIC))
        return images

    def expected(self, job: dict[str, Any], images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What an uninterrupted run of ``job`` restores for each image, computed here as its shard task does (one
        image per shard and batch): synthesised measurement, then the sampler."""
        parsed = parse_job(job)
        unet = load_prior(self.prior).unet
        expected = {}
        for image_id, pixels in images.items():
            arrays = synthesise(parsed.task, [image_id], pixels[None].copy(), parsed.seed, {})
            inputs = inputs_from_arrays(parsed.task, [image_id], arrays)
            restored, _ = restore_batchwise(
                unet,
                inputs,
                parsed.task,
                parsed.sampler_config(),
                seed=parsed.seed,
                batch_size=1,
                device="cpu",
                fit=parsed.fit(),
            )
            expected[image_id] = restored[0]
        return expected

    def submit(self, job: dict[str, Any]) -> UUID:
        """Create a run of the stack's ``restore`` deployment for ``job`` (credentials from the Secret block)."""
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                self.deployment_id, parameters={"job": job, "credentials_block": "diffpir-s3"}
            )
        return run.id

    def wait(self, run_id: UUID, timeout: float = 150) -> FlowRun:
        """The run once it is final (or the test fails after ``timeout`` seconds, naming its state)."""
        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    return run
                assert time.monotonic() < deadline, (
                    f"run {run_id} still {run.state and run.state.name} after {timeout:.0f} s"
                )
                time.sleep(0.5)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_prior: Path) -> Iterator[Stack]:
    """The stack, up, with the ``restore`` flow deployed to its pool as ``restore/stack`` (module entrypoint, no
    concurrency limit); each Prefect worker takes up to 4 runs at a time and polls every second."""
    root = tmp_path_factory.mktemp("stack")
    pg, prefect_port, s3, dask = free_ports(4)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "PREFECT_"))}
    env |= {
        "STACK_DIR": str(root),
        "VENV": sys.prefix,
        "STACK_PG_PORT": str(pg),
        "STACK_PREFECT_PORT": str(prefect_port),
        "STACK_S3_PORT": str(s3),
        "STACK_DASK_PORT": str(dask),
        "STACK_WORKER_LIMIT": "4",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    stack = Stack(
        root, env, f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{s3}", f"tcp://127.0.0.1:{dask}", {}
    )
    try:
        stack.script("up")
        values = dict(line.split("=", 1) for line in (root / "s3.env").read_text().split())
        stack.credentials.update(key=values["AWS_ACCESS_KEY_ID"], secret=values["AWS_SECRET_ACCESS_KEY"])
        stack.prior = str(tiny_prior)
        with temporary_settings({PREFECT_API_URL: stack.api}):
            from prefect.deployments.runner import EntrypointType

            from diffpir_flow.flows.run import run as run_flow

            deployment = run_flow.to_deployment(
                name="stack",
                entrypoint_type=EntrypointType.MODULE_PATH,
                work_pool_name="diffpir-process",
                job_variables={"env": {"PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false", "OMP_NUM_THREADS": "1"}},
            )
            stack.deployment_id = deployment.apply(work_pool_name="diffpir-process")
            yield stack
    finally:
        subprocess.run(["bash", "scripts/stack.sh", "down"], env=env, cwd=REPO, timeout=120)
        data = root / "postgres.data"
        if data.is_file():
            shutil.rmtree(data.read_text().strip(), ignore_errors=True)
