"""SIGKILL of a worker while a shard's output is being written behind the model's computation of the next shard.

The work unit pipelines its shards: the writer thread still holds shard *k* (its data object is written, its record
not yet: the test filesystem ``slowwrite://`` sleeps after each restored data object) while the model restores
shard *k + 1*. Killed there, the shard without a record is simply not done: the re-run restores exactly the shards
without a record, rewrites none that has one, and the output equals that of an uninterrupted run.

This file is also the killed process's program (``python test_write_behind.py JOB.yaml MARKERS``).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from diffpir_core.runs.read import read_restored

if TYPE_CHECKING:
    from diffpir_core.runs.job import Job

REPO = Path(__file__).resolve().parents[2]


class SlowWriteFileSystem(LocalFileSystem):
    """Local files behind ``slowwrite://``; after writing a restored shard's data object it leaves a marker file in
    ``$SLOW_WRITE_MARKERS`` and sleeps ``$SLOW_WRITE_S`` seconds (0 when unset), holding back the shard's record."""

    protocol = ("slowwrite",)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(auto_mkdir=True)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        return super()._strip_protocol(path[len("slowwrite://") :] if path.startswith("slowwrite://") else path)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: object) -> None:
        super().pipe_file(path, value, mode=mode, **kwargs)
        markers = os.environ.get("SLOW_WRITE_MARKERS")
        if "/restored/c/" in path and markers:
            Path(markers, f"{time.monotonic_ns()}").write_text(path)
            time.sleep(float(os.environ.get("SLOW_WRITE_S", "0")))


fsspec.register_implementation("slowwrite", SlowWriteFileSystem, clobber=True)


def _records(output: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in output.glob("jobs/*/restored.zarr/records/*/restored/*/*.json")}


_OVERRIDES = {"shard_size": 2, "batch_size": 2, "sampler": {"iter_num": 4}, "dispatch": {"unit_shards": 8}}


def _start_slow_job(prefect_api: str, job: "Job", tmp_path: Path, slow_s: str) -> tuple[subprocess.Popen, Path]:
    """Run ``job`` in a child process whose output writes sleep ``slow_s`` seconds before each record (markers: one
    file per data object written); returns the child and the markers folder."""
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
        "SLOW_WRITE_MARKERS": str(markers),
        "SLOW_WRITE_S": slow_s,
        "PYTHONPATH": str(REPO),
    }
    child = subprocess.Popen(
        [sys.executable, __file__, str(job_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return child, markers


def test_worker_killed_while_a_write_is_behind_a_computation_loses_nothing(
    prefect_api: str, make_job, image_writer, tmp_path: Path
) -> None:
    from diffpir_flow.flows.run import run

    images, output, overrides = tmp_path / "images", tmp_path / "killed", _OVERRIDES
    image_writer(images, 16, seed=11)
    job = make_job(images, f"slowwrite://{output}", **overrides)
    child, markers = _start_slow_job(prefect_api, job, tmp_path, "30")
    try:
        deadline = time.monotonic() + 240
        while not list(markers.iterdir()):  # shard 0's data is written; its record waits behind the 30 s sleep
            assert child.poll() is None, (
                f"the job ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, "no shard was written in time"
            time.sleep(0.05)
        time.sleep(1.0)  # meanwhile the model restores shard 1 (its inputs were read ahead)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    (written,) = [p.read_text() for p in markers.iterdir()]
    assert "/restored/c/0/" in written  # shard 0's data object, written behind the computation of shard 1
    assert _records(output) == {}  # its record never followed: nothing counts as done

    state = run(job=job, return_state=True)  # this process: no markers, no sleep
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["restored"], summary["skipped"], summary["failed"]) == (8, 0, {})
    clean = make_job(images, tmp_path / "clean", **overrides)
    assert run(job=clean, return_state=True).is_completed()
    np.testing.assert_equal(read_restored(f"slowwrite://{output}"), read_restored(str(tmp_path / "clean")))


def test_a_kill_after_some_records_rewrites_none_of_them(
    prefect_api: str, make_job, image_writer, tmp_path: Path
) -> None:
    from diffpir_flow.flows.run import run

    images, output, overrides = tmp_path / "images", tmp_path / "killed", _OVERRIDES
    image_writer(images, 16, seed=12)
    job = make_job(images, f"slowwrite://{output}", **overrides)
    child, markers = _start_slow_job(prefect_api, job, tmp_path, "1.5")
    try:
        deadline = time.monotonic() + 240
        while len(_records(output)) < 2:  # two shards recorded, the third written behind the fourth's computation
            assert child.poll() is None, (
                f"the job ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    finished = _records(output)
    written = len(list(markers.iterdir()))
    assert child.returncode == -signal.SIGKILL and 2 <= len(finished) < 8 and written >= len(finished)

    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["skipped"] == len(finished) and summary["restored"] == 8 - len(finished)
    after = _records(output)
    assert {path: after[path] for path in finished} == finished  # no recorded shard was rewritten
    clean = make_job(images, tmp_path / "clean", **overrides)
    assert run(job=clean, return_state=True).is_completed()
    np.testing.assert_equal(read_restored(f"slowwrite://{output}"), read_restored(str(tmp_path / "clean")))


def test_a_unit_holds_its_model_slot_only_while_the_model_runs(
    make_job, image_writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage slower than the model: the unit waits for its writer without the slot, so another unit could compute."""
    from diffpir_core.io import DatasetStore
    from diffpir_core.runs import priors, unit
    from diffpir_core.runs.prepare import ingest_input, plan_job

    image_writer(tmp_path / "images", 8, seed=13)
    job = make_job(
        tmp_path / "images",
        f"slowwrite://{tmp_path}/out",
        **{**_OVERRIDES, "runner": {"kind": "local", "max_workers": 1}},
    )
    plan = plan_job(job, ingest_input(job)["store"])
    refs = DatasetStore.open(plan.output_store).shards()
    monkeypatch.setattr(priors, "_SLOTS", priors._SLOTS)  # the process's settings back after the test
    monkeypatch.setattr(priors, "_THREADS", priors._THREADS)
    priors.configure_process(job, 1)
    held: list[float] = []
    computing: list[float] = []
    real_slot, real_restore = unit.model_slot, unit.restore_prepared

    @contextlib.contextmanager
    def timed_slot() -> Iterator[None]:
        started = time.perf_counter()
        with real_slot():
            yield
        held.append(time.perf_counter() - started)

    def timed_restore(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_restore(*args, **kwargs)
        finally:
            computing.append(time.perf_counter() - started)

    monkeypatch.setattr(unit, "model_slot", timed_slot)
    monkeypatch.setattr(unit, "restore_prepared", timed_restore)
    (tmp_path / "markers").mkdir()
    monkeypatch.setenv("SLOW_WRITE_MARKERS", str(tmp_path / "markers"))
    monkeypatch.setenv("SLOW_WRITE_S", "1.0")  # each shard's write: 1 s, longer than its computation
    outcome = unit.run_unit(job, plan, refs)
    assert [outcome["manifests"][ref.key]["status"] for ref in refs] == ["restored"] * 4
    assert len(held) == len(computing) == 4
    assert sum(held) - sum(computing) < 0.5, (held, computing)  # the writer's 4 s were waited for without the slot


if __name__ == "__main__":
    import torch

    from diffpir_core.runs.job import load_job
    from diffpir_flow.flows.run import run as restore_flow

    torch.set_num_threads(1)
    restore_flow(job=load_job(Path(sys.argv[1]), []))
