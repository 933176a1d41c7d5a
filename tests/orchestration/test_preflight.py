"""``diffpir run`` stops before any work, in one line naming the job field and the fix, with no traceback:
a CUDA device that is not there, a Dask scheduler that does not answer, a kernel file that does not exist, a
bucket that does not exist; a permanent error at run time does not suggest re-running."""

import importlib.util
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffpir_flow.cli.app import app


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
    assert (
        result.exit_code == 2
        and "error: device: 'cuda' was requested" in result.output
        and "device: auto or cpu" in result.output
    )
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
    assert result.exit_code == 2 and "error: output: bucket 'no-such-bucket-x' does not exist" in result.output, (
        result.output
    )
    assert "Traceback" not in result.output


def test_a_permanent_error_at_run_time_does_not_suggest_a_rerun(make_job, tmp_path: Path) -> None:
    (
        tmp_path / "broken"
    ).mkdir()  # its one image does not decode: the ingest quarantines it and fails, and would again
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    result = _run(make_job(tmp_path / "broken", tmp_path / "out"), tmp_path)
    assert result.exit_code == 1, result.output
    assert "this error is permanent" in result.output and "retry only what is not done" not in result.output, (
        result.output
    )
    assert "Traceback" not in result.output


def test_a_missing_input_folder_stops_before_any_work(make_job, tmp_path: Path) -> None:
    job = make_job(tmp_path / "no-such-folder", tmp_path / "out")
    for flags in ((), ("--dry-run",)):
        result = _run(job, tmp_path, *flags)
        assert (
            result.exit_code == 2 and f"error: input: {tmp_path / 'no-such-folder'} is not a folder" in result.output
        ), result.output
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()  # no output folder left behind


def test_a_folder_without_images(make_job, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = _run(make_job(tmp_path / "empty", tmp_path / "out"), tmp_path, "--dry-run")
    assert result.exit_code == 2 and "error: input: no image files" in result.output, result.output


def test_dry_run_reads_per_image_masks_as_the_run_does(make_job, images_8: Path, tmp_path: Path) -> None:
    """Restore mode with a mask folder: a mask of the wrong size (the run would quarantine every image) is named by
    ``--dry-run``; masks of the right size pass."""
    from PIL import Image

    masks = tmp_path / "masks"
    masks.mkdir()
    ids = sorted(p.stem for p in images_8.iterdir())
    for size in (16, 32):
        for image_id in ids:
            Image.new("L", (size, size), 255).save(masks / f"{image_id}.png")
        job = make_job(
            images_8,
            tmp_path / "out",
            mode="restore",
            task={"kind": "inpaint", "mask": str(masks)},
            metrics=["consistency"],
        )
        result = _run(job, tmp_path, "--dry-run")
        if size == 16:
            assert (
                result.exit_code == 2 and "error: task.mask: every one of the 8 image(s) checked" in result.output
            ), result.output
            assert "is 16x16 but the image is 32x32" in result.output
        else:
            assert result.exit_code == 0 and "preflight: every check passed" in result.output, result.output


def test_a_prior_not_downloaded(make_job, images_8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFPIR_MODEL_DIR", str(tmp_path / "models"))
    result = _run(make_job(images_8, tmp_path / "out", prior="ffhq_256"), tmp_path, "--dry-run")
    assert result.exit_code == 2 and "error: prior: 'ffhq_256' is not here" in result.output, result.output
    assert "diffpir models download ffhq_256" in result.output


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is not None, reason="dask_cuda is installed here")
def test_a_cuda_cluster_without_dask_cuda(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out", runner={"kind": "dask", "cluster_class": "dask_cuda.LocalCUDACluster"})
    result = _run(job, tmp_path, "--dry-run")
    assert (
        result.exit_code == 2 and "error: runner.cluster_class: dask_cuda.LocalCUDACluster needs" in result.output
    ), result.output
    assert "pip install dask-cuda" in result.output


def test_missing_s3_credentials_name_the_environment_not_the_job_file(
    make_job, images_8: Path, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    job = make_job(images_8, "s3://some-bucket/out", storage_options={"endpoint_url": s3_endpoint})
    result = _run(job, tmp_path, "--dry-run")
    assert result.exit_code == 2 and "error: output: cannot reach bucket 'some-bucket'" in result.output, result.output
    assert (
        "AWS_ACCESS_KEY_ID" in result.output
        and "~/.aws" in result.output
        and "check storage_options" not in result.output
    )


def test_the_demo_prior_on_photos_says_it_is_a_demo(tmp_path: Path) -> None:
    """A one-line notice when the bundled 64-px demo prior is to restore larger images (none for its own size, or for
    another prior)."""
    from PIL import Image

    from diffpir_core.runs.job import parse_job
    from diffpir_core.runs.preflight import cost_lines, demo_prior_notice, restored_sizes

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (640, 427)).save(tmp_path / "photos" / "photo.png")
    job = parse_job(
        {
            "input": str(tmp_path / "photos"),
            "output": str(tmp_path / "out"),
            "task": {"kind": "sr", "scale": 2},
            "prior": "demo",
        }
    )
    sizes = restored_sizes(job)
    assert sizes == [(427, 640)]
    notice = demo_prior_notice(job, sizes)
    assert notice is not None and "small 64-px demo prior" in notice and "`diffpir models` (docs/models.md)" in notice
    assert demo_prior_notice(job, [(64, 64)]) is None
    assert demo_prior_notice(job.model_copy(update={"prior": "ffhq_256"}), sizes) is None
    (cost,) = cost_lines(
        job.model_copy(update={"sampler": {"iter_num": 20}}), sizes
    )  # the tiles every step costs, counted
    assert cost.startswith(
        "cost: 20 network calls per image x 117 tile forward(s) each (640x427 restored, 64-px prior)"
    ), cost
    assert "about 2,340 tile forwards per image" in cost


def test_dry_run_says_an_auto_noise_level_is_estimated_per_image(make_job, images_8: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "k.npy", np.full((5, 5), 1 / 25, np.float32))
    job = make_job(
        images_8,
        tmp_path / "out",
        mode="restore",
        task={"kind": "deblur", "kernel": str(tmp_path / "k.npy"), "noise_sigma": "auto"},
    )
    result = _run(job, tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "noise_sigma:      auto     from task (estimated per image from its measurement)" in result.output, (
        result.output
    )
