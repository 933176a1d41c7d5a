"""``diffpir run`` of a small local job in a subprocess, with its own temporary Prefect server: exit 0 and no
traceback anywhere in its output, the server's shutdown included (a server stopped while it still records task runs
can log tracebacks), and with ``PREFECT_API_URL`` set but empty (Prefect's events client then fails on every event)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image


@pytest.mark.timeout(1200)
def test_a_successful_run_prints_no_traceback(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = tmp_path / "in"
    images.mkdir()
    for i in range(24):  # 24 one-image shards: enough task-run events that the server is still recording them at the end
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"im{i:02d}.png")
    job = {
        "input": str(images), "output": str(tmp_path / "out"), "task": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
        "prior": "demo", "shard_size": 1, "batch_size": 1, "device": "cpu", "sampler": {"iter_num": 1}, "threads": 1,
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = dict(os.environ, PREFECT_API_URL="")  # exported but empty, as shell profiles leave it: no server, one of its own
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    diffpir = Path(sys.executable).with_name("diffpir")
    done = subprocess.run([str(diffpir), "run", str(tmp_path / "job.yaml")], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed: 24 shard(s) restored" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-6000:]
    assert "Error flushing" not in done.stderr
    assert "EventsWorker" not in done.stderr and "stopped service" not in done.stderr, done.stderr[-6000:]
