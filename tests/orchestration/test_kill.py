"""SIGKILL of a process running a job after some shards finished: the re-run recomputes no finished
shard and the output equals that of an uninterrupted run."""

import os
import signal
import time
from pathlib import Path

import numpy as np

from diffpir_core.runs.read import read_restored
from diffpir_flow.flows.run import run


def _records(output: Path) -> dict[str, int]:
    """Record file -> mtime (ns) of every restored-shard record in the output."""
    return {str(p): p.stat().st_mtime_ns for p in output.glob("jobs/*/restored.zarr/records/*/restored/*/*.json")}


def test_killed_job_resumes_without_recomputing_finished_shards(
    prefect_api: str, make_job, image_writer, tmp_path: Path, spawn_cli_run
) -> None:
    images = tmp_path / "images"
    image_writer(images, 16, seed=3)
    job = make_job(images, tmp_path / "killed", shard_size=2, batch_size=2, sampler={"iter_num": 8})
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,  # the session's test server, not an ephemeral one of its own
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
    }
    child = spawn_cli_run(job_file, env)
    try:
        deadline = time.monotonic() + 240
        while len(_records(tmp_path / "killed")) < 2:
            assert child.poll() is None, (
                f"the job ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    finished = _records(tmp_path / "killed")
    assert child.returncode == -signal.SIGKILL and 2 <= len(finished) < 8

    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["skipped"] >= len(finished) and summary["restored"] == 8 - summary["skipped"]
    after = _records(tmp_path / "killed")
    assert {path: after[path] for path in finished} == finished  # no finished shard was rewritten

    uninterrupted = make_job(images, tmp_path / "clean", shard_size=2, batch_size=2, sampler={"iter_num": 8})
    assert run(job=uninterrupted, return_state=True).is_completed()
    np.testing.assert_equal(read_restored(str(tmp_path / "killed")), read_restored(str(tmp_path / "clean")))
