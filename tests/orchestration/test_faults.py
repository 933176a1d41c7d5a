"""Storage faults: a wrapper filesystem (``faulty://``, test-only) that fails chosen writes.

Transient write failures are absorbed by task retries with nothing lost; a shard whose writes always
fail leaves the flow Failed with that shard named, and a re-run after the fault is gone completes it. A full or
read-only output, a mask that is not an image, and two jobs started at once into one fresh output each say what failed
and what to do, once.
"""

import errno
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from diffpir_core.runs.failures import ShardFailure
from diffpir_core.runs.prepare import ingest_input
from diffpir_core.runs.read import read_restored
from diffpir_core.runs.status import job_status
from diffpir_flow.flows.run import run


class FaultyFileSystem(LocalFileSystem):
    """Local files behind ``faulty://``; writes whose path contains ``match`` fail by the class settings."""

    protocol = ("faulty",)
    match = "/restored/c/"  # the data objects of restored shards
    fail_first = 0  # the first N matching writes raise
    always: tuple[str, ...] = ()  # writes whose path contains one of these always raise
    error: Callable[[str], OSError] = ConnectionResetError
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
            always = any(part in path for part in self.always)
            if always or self.match in path and FaultyFileSystem.failures < self.fail_first:
                FaultyFileSystem.failures += 1
                raise self.error(f"injected write failure #{FaultyFileSystem.failures} on {path}")
        super().pipe_file(path, value, mode=mode, **kwargs)


@pytest.fixture
def faulty() -> Iterator[type[FaultyFileSystem]]:
    fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
    yield FaultyFileSystem
    FaultyFileSystem.fail_first, FaultyFileSystem.always, FaultyFileSystem.failures = 0, (), 0
    FaultyFileSystem.error = ConnectionResetError


def test_transient_write_failures_are_retried_with_nothing_lost(
    faulty, make_job, images_8: Path, tmp_path: Path
) -> None:
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
    np.testing.assert_equal(read_restored(str(output)), read_restored(str(tmp_path / "clean")))


def test_a_shard_that_always_fails_fails_the_flow_and_a_rerun_completes_it(
    faulty, make_job, images_8: Path, tmp_path: Path
) -> None:
    faulty.always = ("/restored/c/1/",)  # the data object of shard 1
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

    faulty.always = ()
    again = run(job=job, return_state=True)
    assert again.is_completed(), again.message
    assert (again.result()["skipped"], again.result()["restored"]) == (1, 1)
    assert job_status(output)["counts"]["done"] == 2


def test_permanent_errors_are_not_retried(faulty, make_job, images_8: Path, tmp_path: Path) -> None:
    faulty.always, faulty.error = ("/restored/c/0/",), PermissionError
    output = f"faulty://{tmp_path}/out"
    state = run(job=make_job(images_8, output, retries=3), return_state=True)
    assert state.is_failed() and "PermissionError (permanent)" in state.message
    shard = {s["id"]: s for s in job_status(output)["shards"]}["32x32/000000"]
    assert (shard["state"], shard["attempts"]) == ("failed", 1)


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.ENOSPC, "the output's disk is full: free space there"), (errno.EROFS, "the output is read-only")],
)
def test_a_full_or_read_only_output_names_the_failed_shards_and_what_to_do(
    code, fix, faulty, make_job, images_8: Path, tmp_path: Path
) -> None:
    faulty.always, faulty.error = ("/restored/c/1/", "metrics.csv"), functools.partial(OSError, code)
    state = run(job=make_job(images_8, f"faulty://{tmp_path}/out", retries=2), return_state=True)
    assert state.is_failed()
    assert state.message.startswith("1/2 shard(s) failed: 32x32/000001: OSError (permanent)"), state.message
    assert fix in state.message and "the report failed too" in state.message
    (failure,) = state.result(raise_on_failure=False)["failed"].values()
    assert (failure.shard, failure.transient, fix in failure.fix) == ("32x32/000001", False, True)
    assert {s["id"]: s["attempts"] for s in job_status(f"faulty://{tmp_path}/out")["shards"]}["32x32/000001"] == 1


def test_a_mask_that_is_not_an_image_fails_at_once_naming_the_file(make_job, images_8: Path, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    mask.write_text("not an image")
    job = make_job(images_8, tmp_path / "out", task={"kind": "inpaint", "mask": str(mask)}, retries=2)
    state = run(job=job, return_state=True)
    assert state.is_failed()
    failures = state.result(raise_on_failure=False)["failed"]
    assert failures and all(not f.transient for f in failures.values())
    assert f"task.mask {mask}: not an image file" in state.message
    assert all(s["attempts"] == 1 for s in job_status(str(tmp_path / "out"))["shards"])


def test_two_jobs_started_at_once_into_one_fresh_output_both_ingest(make_job, image_writer, tmp_path: Path) -> None:
    image_writer(tmp_path / "images", 120, seed=4)
    jobs = [make_job(tmp_path / "images", tmp_path / "out", sampler={"iter_num": n}) for n in (3, 4)]
    start, results = threading.Barrier(2), {}

    def ingest(index: int) -> None:
        start.wait()
        try:
            results[index] = ingest_input(jobs[index])
        except Exception as err:
            results[index] = err

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r["images"] if isinstance(r, dict) else r for r in results.values()] == [120, 120]
    assert sorted(r["changes"]["added"] for r in results.values()) == [0, 120]  # one ingested, the other found it done


def test_the_cli_names_each_failed_shard_once_and_each_fix_once(capsys: pytest.CaptureFixture[str]) -> None:
    from diffpir_flow.cli.jobs import _failed

    fix = "the output's disk is full: free space there, then re-run the job (finished shards are kept)"
    failed = {
        f"g/{i}": ShardFailure(f"g/{i}", "OSError", False, False, f"[Errno 28] No space left: '/o/{i}'", fix)
        for i in (1, 2)
    }
    _failed("2/2 shard(s) failed", {"failed": failed}, None, Path("job.yaml"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "failed: 2 shard(s) failed:",
        "  shard g/1: OSError (permanent): [Errno 28] No space left: '/o/1'",
        "  shard g/2: OSError (permanent): [Errno 28] No space left: '/o/2'",
        f"to fix: {fix}",
    ]
