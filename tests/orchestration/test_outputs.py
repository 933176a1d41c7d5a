"""Outputs the job owns: several jobs share one output without touching each other's results, foreign or nested
outputs are refused (``--force`` where it makes sense), and a copied or moved output reports its own state."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from diffpir_core.io import export_images
from diffpir_core.runs.plan import read_plans
from diffpir_core.runs.status import job_status, output_status
from diffpir_flow.cli.app import app
from diffpir_flow.flows.run import run


def _exported(store: str, array: str, destination: Path) -> dict[str, np.ndarray]:
    summary = export_images(store, str(destination), array=array)
    assert summary.skipped_shards == []
    files = dict(list(csv.reader(io.StringIO((destination / "ids.csv").read_text())))[1:])
    return {image_id: np.asarray(Image.open(destination / name)) for image_id, name in files.items()}


def test_three_jobs_with_other_lambdas_and_shard_sizes_share_one_output(
    make_job, image_writer, restore_alone, tmp_path: Path
) -> None:
    images = image_writer(tmp_path / "images", 8)
    out = tmp_path / "shared"
    jobs = [
        make_job(tmp_path / "images", out, shard_size=4),
        make_job(tmp_path / "images", out, shard_size=3, sampler={"iter_num": 3, "lambda_": 2.0}),
        make_job(tmp_path / "images", out, shard_size=8, sampler={"iter_num": 3, "lambda_": 12.0}),
    ]
    for job, shards in zip(jobs, (2, 3, 1), strict=True):
        assert run(job=job, return_state=True).result()["restored"] == shards
    for job in jobs:  # a later job deleted nothing of an earlier one
        assert run(job=job, return_state=True).result()["skipped"] == len(
            job_status(str(out), job=job.job_hash())["shards"]
        )
    plans = {plan.job_hash: plan for plan in read_plans(str(out), {})}
    assert plans.keys() == {job.job_hash() for job in jobs}
    assert len({plan.input_store for plan in plans.values()}) == 1  # one ingest serves all three
    results = []
    for number, job in enumerate(jobs):
        plan = plans[job.job_hash()]
        exported = _exported(plan.output_store, plan.restored_array, tmp_path / f"export-{number}")
        assert exported.keys() == images.keys()
        for image_id, pixels in images.items():
            np.testing.assert_array_equal(exported[image_id], restore_alone(job, image_id, pixels), err_msg=image_id)
        assert (Path(plan.job_dir) / "summary.json").is_file() and (Path(plan.job_dir) / "report.html").is_file()
        results.append(exported["img000.png"])
    assert not np.array_equal(results[0], results[1]) and not np.array_equal(results[1], results[2])

    listing = output_status(str(out))
    assert [entry["job_hash"] for entry in listing["jobs"]] == [job.job_hash() for job in reversed(jobs)]
    assert all(entry["counts"]["pending"] == entry["counts"]["failed"] == 0 for entry in listing["jobs"])
    text = CliRunner().invoke(app, ["status", str(out)]).output
    assert "3 job(s)" in text and all(f"job {job.job_hash()[:16]}" in text for job in jobs)
    assert text.count("sr2-images-evaluate") == 3 and "3 done, 0 failed, 0 pending" in text
    one = json.loads(CliRunner().invoke(app, ["status", str(out), "--json", "--job", jobs[1].job_hash()[:8]]).output)
    assert [entry["job_hash"] for entry in one["jobs"]] == [jobs[1].job_hash()]


def test_a_foreign_or_nested_output_is_refused_and_force_adopts_a_foreign_one(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "theirs"
    (foreign / "restored.zarr").mkdir(parents=True)
    (foreign / "restored.zarr" / "zarr.json").write_text('{"their": "data"}')
    runner = CliRunner()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(make_job(images_8, foreign).to_yaml())
    refused = runner.invoke(app, ["run", str(job_file)])
    assert refused.exit_code == 2 and "is not empty and holds no diffpir-output.json" in refused.output
    assert "--force" in refused.output and "Traceback" not in refused.output
    state = run(job=make_job(images_8, foreign), return_state=True)  # a deployment run is refused the same way
    assert state.is_failed() and "not a diffpir output" in state.message
    forced = runner.invoke(app, ["run", str(job_file), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (foreign / "restored.zarr" / "zarr.json").read_text() == '{"their": "data"}'  # left alone
    assert job_status(str(foreign))["counts"]["done"] == 2

    inside = tmp_path / "copy-of-images"
    shutil.copytree(images_8, inside)
    job_file.write_text(make_job(inside, inside / "results").to_yaml())
    for flags in ([], ["--force"]):
        nested = runner.invoke(app, ["run", str(job_file), *flags])
        assert (
            nested.exit_code == 2
            and "inside the input" in nested.output
            and "outside the input folder" in nested.output
        )
    assert not (inside / "results").exists()


def test_a_copied_or_moved_output_reports_its_own_state_and_resumes(make_job, images_8: Path, tmp_path: Path) -> None:
    original = tmp_path / "original"
    job = make_job(images_8, original)
    assert run(job=job, return_state=True).is_completed()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    (record,) = copy.glob("jobs/*/restored.zarr/records/32x32/restored/000001/*.json")
    record.unlink()  # the copy loses a record; the original does not
    assert [s["state"] for s in job_status(str(copy))["shards"]] == ["done", "pending"]
    assert [s["state"] for s in job_status(str(original))["shards"]] == ["done", "done"]
    assert str(original) not in (next(copy.glob("jobs/*/run.json"))).read_text()  # locations are relative

    moved = tmp_path / "moved"
    original.rename(moved)
    status = CliRunner().invoke(app, ["status", str(moved)])
    assert (
        status.exit_code == 0 and "2 done, 0 failed, 0 pending" in status.output and "Traceback" not in status.output
    )
    again = run(job=make_job(images_8, moved), return_state=True).result()
    assert (again["restored"], again["skipped"]) == (0, 2)
    resumed = run(job=make_job(images_8, copy), return_state=True).result()
    assert (resumed["restored"], resumed["skipped"]) == (1, 1)
    missing = CliRunner().invoke(app, ["status", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 2 and "holds no diffpir job" in missing.output
