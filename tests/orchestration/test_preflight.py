"""``diffpir run`` stops before any work, in one line naming the job field and the fix, with no traceback:
a CUDA device that is not there, a Dask scheduler that does not answer, a kernel file that does not exist, a
bucket that does not exist; a permanent error at run time does not suggest re-running."""

import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffpir_cli.app import app


def _run(job, tmp_path: Path, *flags: str):
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml(redact=False))
    return CliRunner().invoke(app, ["run", str(job_file), *flags])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_cuda_is_an_error_naming_device(make_job, images_8: Path, tmp_path: Path) -> None:
    result = _run(make_job(images_8, tmp_path / "out", device="cuda"), tmp_path)
    assert result.exit_code == 2 and "error: device: 'cuda' was requested" in result.output and "device: auto or cpu" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()  # nothing written


def test_a_dask_address_that_does_not_answer(make_job, images_8: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    result = _run(make_job(images_8, tmp_path / "out", runner={"kind": "dask", "address": address}), tmp_path)
    assert result.exit_code == 2 and f"error: runner.address: no Dask scheduler answers at {address}" in result.output
    assert "Traceback" not in result.output


def test_a_missing_kernel_file(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out", task={"kind": "deblur", "kernel": str(tmp_path / "nope.npy")})
    result = _run(job, tmp_path)
    assert result.exit_code == 2 and "error: task: a kernel/mask file" in result.output, result.output
    assert "Traceback" not in result.output


def test_a_bucket_that_does_not_exist(make_job, images_8: Path, tmp_path: Path, s3_options: dict) -> None:
    result = _run(make_job(images_8, "s3://no-such-bucket-x/out", storage_options=s3_options), tmp_path)
    assert result.exit_code == 2 and "error: output: bucket 'no-such-bucket-x' does not exist" in result.output, result.output
    assert "Traceback" not in result.output


def test_a_permanent_error_at_run_time_does_not_suggest_a_rerun(make_job, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # a folder with no image: the ingest fails, and would again
    result = _run(make_job(tmp_path / "empty", tmp_path / "out"), tmp_path)
    assert result.exit_code == 1, result.output
    assert "this error is permanent" in result.output and "retry only what is not done" not in result.output, result.output
    assert "Traceback" not in result.output
