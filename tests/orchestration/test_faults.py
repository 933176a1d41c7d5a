"""Storage faults: a wrapper filesystem (``faulty://``, test-only) that fails chosen writes.

Transient write failures are absorbed by task retries with nothing lost; a shard whose writes always
fail leaves the flow Failed with that shard named, and a re-run after the fault is gone completes it.
"""

import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from diffpir_core.io import DatasetStore
from diffpir_core.runs.plan import read_plans
from diffpir_core.runs.status import job_status
from diffpir_flow.flows.run import run


class FaultyFileSystem(LocalFileSystem):
    """Local files behind ``faulty://``; writes whose path contains ``match`` fail by the class settings."""

    protocol = ("faulty",)
    match = "/restored/c/"  # the data objects of restored shards
    fail_first = 0  # the first N matching writes raise
    always: str | None = None  # writes whose path contains this always raise
    error: type[OSError] = ConnectionResetError
    failures = 0
    _lock = threading.Lock()

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(auto_mkdir=True)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        return super()._strip_protocol(path[len("faulty://") :] if path.startswith("faulty://") else path)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: object) -> None:
        with FaultyFileSystem._lock:
            if self.match in path and (self.always and self.always in path or FaultyFileSystem.failures < self.fail_first):
                FaultyFileSystem.failures += 1
                raise self.error(f"injected write failure #{FaultyFileSystem.failures} on {path}")
        super().pipe_file(path, value, mode=mode, **kwargs)


@pytest.fixture
def faulty() -> Iterator[type[FaultyFileSystem]]:
    fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
    yield FaultyFileSystem
    FaultyFileSystem.fail_first, FaultyFileSystem.always, FaultyFileSystem.failures = 0, None, 0
    FaultyFileSystem.error = ConnectionResetError


def _restored(output: str, options: dict | None = None) -> np.ndarray:
    plan = read_plans(output, {})[0]
    store = DatasetStore.open(plan.output_store, options)
    return np.concatenate([store.read_array(ref, plan.restored_array) for ref in store.shards()])


def test_transient_write_failures_are_retried_with_nothing_lost(faulty, make_job, images_8: Path, tmp_path: Path) -> None:
    faulty.fail_first = 3
    output = f"faulty://{tmp_path}/out"
    state = run(job=make_job(images_8, output, retries=3), return_state=True)
    assert state.is_completed(), state.message
    assert faulty.failures == 3
    status = job_status(output)
    assert status["counts"]["done"] == 2
    assert sum(s["attempts"] for s in status["shards"]) == 2 + 3  # every failure cost one attempt

    clean = make_job(images_8, tmp_path / "clean")
    assert run(job=clean, return_state=True).is_completed()
    np.testing.assert_array_equal(_restored(output), _restored(str(tmp_path / "clean")))


def test_a_shard_that_always_fails_fails_the_flow_and_a_rerun_completes_it(
    faulty, make_job, images_8: Path, tmp_path: Path
) -> None:
    faulty.always = "/restored/c/1/"  # the data object of shard 1
    output = f"faulty://{tmp_path}/out"
    job = make_job(images_8, output, retries=2)
    state = run(job=job, return_state=True)
    assert state.is_failed()
    assert "1/2 shard(s) failed: 32x32/000001" in state.message and "ConnectionResetError" in state.message
    data = state.result(raise_on_failure=False)
    assert list(data["failed"]) == ["32x32/000001"] and data["done"] == 1
    status = {s["id"]: s for s in job_status(output)["shards"]}
    assert status["32x32/000000"]["state"] == "done"
    failed = status["32x32/000001"]
    assert failed["state"] == "failed" and failed["attempts"] == 3 and "injected write failure" in failed["error"]

    faulty.always = None
    again = run(job=job, return_state=True)
    assert again.is_completed(), again.message
    assert (again.result()["skipped"], again.result()["restored"]) == (1, 1)
    assert job_status(output)["counts"]["done"] == 2


def test_permanent_errors_are_not_retried(faulty, make_job, images_8: Path, tmp_path: Path) -> None:
    faulty.always, faulty.error = "/restored/c/0/", PermissionError
    output = f"faulty://{tmp_path}/out"
    state = run(job=make_job(images_8, output, retries=3), return_state=True)
    assert state.is_failed() and "PermissionError (permanent)" in state.message
    shard = {s["id"]: s for s in job_status(output)["shards"]}["32x32/000000"]
    assert (shard["state"], shard["attempts"]) == ("failed", 1)
