"""The restore flow on the local runner: outputs, records, reports, artifacts, re-runs, status."""

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowRunFilter
from typer.testing import CliRunner

from diffpir_core.io import DatasetStore
from diffpir_core.runs.plan import JobPlan, read_plans
from diffpir_core.runs.priors import prior_loads
from diffpir_core.runs.read import read_restored
from diffpir_core.runs.status import job_status
from diffpir_flow.cli.app import app
from diffpir_flow.flows.run import run as run_flow
from diffpir_flow.flows.score import score


def _plan(output: Path) -> JobPlan:
    """The plan of the job run last into ``output``."""
    return read_plans(str(output), {})[0]


def _job_dir(output: Path) -> Path:
    return Path(_plan(output).job_dir)


def _metric_run_states(state: Any) -> list[str]:
    """States of the ``metrics-…`` task runs of the flow run behind ``state``."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}))
    return sorted(t.state.name for t in runs if t.name.startswith("metrics-"))


def test_evaluate_job_writes_shards_records_report_and_reruns_nothing(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    job = make_job(images_8, tmp_path / "out", metrics=["psnr", "ssim", "consistency"])
    state = run_flow(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["shards"], summary["restored"], summary["skipped"], summary["failed"]) == (2, 2, 0, {})

    out = tmp_path / "out"
    for name in ("job.yaml", "run.json", "report.md", "report.html", "metrics.csv", "summary.json"):
        assert (_job_dir(out) / name).is_file(), name
    restored = np.stack(list(read_restored(str(out)).values()))
    assert restored.shape == (8, 32, 32, 3) and restored.dtype == np.uint8 and restored.std() > 0
    report = json.loads((_job_dir(out) / "summary.json").read_text())
    assert report["images"] == 8 and report["nfes"] == 3
    assert report["metrics"]["psnr"]["count"] == 8 and 0 < report["metrics"]["psnr"]["mean"] < 60
    assert report["metrics"]["measurement_rms"]["count"] == 8
    assert len((_job_dir(out) / "metrics.csv").read_text().strip().splitlines()) == 9
    assert "<img" in (_job_dir(out) / "report.html").read_text()
    first_csv = (_job_dir(out) / "metrics.csv").read_text()

    records = list((_job_dir(out) / "restored.zarr" / "records").glob("*/restored/[0-9]*/*.json"))
    assert len(records) == 2
    loads = prior_loads()
    again = run_flow(job=job, return_state=True)
    assert again.is_completed()
    assert (again.result()["restored"], again.result()["skipped"]) == (0, 2)
    assert prior_loads() == loads  # finished shards are skipped without loading the prior
    np.testing.assert_array_equal(np.stack(list(read_restored(str(out)).values())), restored)
    # the units scored their shards and kept the rows in the records: the re-run scores nothing again
    assert _metric_run_states(again) == []
    assert (_job_dir(out) / "metrics.csv").read_text() == first_csv

    # other metrics (not part of the job hash): the shards are skipped, but scored again, then cached per shard data
    fewer = job.model_copy(update={"metrics": ["psnr"]})
    scored = run_flow(job=fewer, return_state=True)
    assert (scored.result()["restored"], scored.result()["skipped"]) == (0, 2)
    assert _metric_run_states(scored) == ["Completed", "Completed"]
    assert _metric_run_states(run_flow(job=fewer, return_state=True)) == ["Cached", "Cached"]
    psnr = {row["id"]: row["psnr"] for row in csv.DictReader(io.StringIO(first_csv))}
    assert {row["id"]: row["psnr"] for row in csv.DictReader((_job_dir(out) / "metrics.csv").open())} == psnr

    status = job_status(str(out))
    assert status["counts"] == {"done": 2, "failed": 0, "pending": 0, "quarantined": 0}
    assert {s["id"] for s in status["shards"]} == {"32x32/000000", "32x32/000001"}


def test_changed_job_never_reuses_shards_and_results_do_not_depend_on_batching(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    first = make_job(images_8, tmp_path / "a", batch_size=1)
    assert run_flow(job=first, return_state=True).is_completed()
    rebatched = make_job(images_8, tmp_path / "b", batch_size=4, shard_size=4)
    assert run_flow(job=rebatched, return_state=True).is_completed()
    np.testing.assert_equal(read_restored(str(tmp_path / "a")), read_restored(str(tmp_path / "b")))

    other_lambda = make_job(images_8, tmp_path / "a", batch_size=1, sampler={"iter_num": 3, "lambda_": 2.0})
    state = run_flow(job=other_lambda, return_state=True)
    assert state.result()["restored"] == 2  # nothing reused from the λ = preset run
    assert _plan(tmp_path / "a").job_hash == other_lambda.job_hash() != first.job_hash()
    changed, unchanged = (
        read_restored(str(tmp_path / "a"), other_lambda.job_hash()),
        read_restored(str(tmp_path / "b")),
    )
    assert changed.keys() == unchanged.keys() and any(not np.array_equal(changed[k], unchanged[k]) for k in changed)


def test_restore_mode_with_a_mask_file(make_job, image_writer, tmp_path: Path) -> None:
    folder = tmp_path / "masked"
    images = image_writer(folder, 3)
    mask = np.ones((32, 32), dtype=np.uint8) * 255
    mask[8:24, 8:24] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    for name, pixels in images.items():
        Image.fromarray(pixels * (mask[..., None] > 0)).save(folder / name)
    job = make_job(
        folder,
        tmp_path / "out",
        mode="restore",
        metrics=None,
        task={"kind": "inpaint", "mask": str(tmp_path / "mask.png"), "noise_sigma": 0.0},
    )
    state = run_flow(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = json.loads((_job_dir(tmp_path / "out") / "summary.json").read_text())
    rms = summary["metrics"]["measurement_rms"]
    assert rms["count"] == 3 and rms["max"] < 0.05  # known pixels are kept: A(x̂) ≈ y


def test_ui_artifacts_and_run_names(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out", name="faces")
    state = run_flow(job=job, return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.name == "sr2-faces-evaluate"
        # by key and by run: the session's server holds every test's artifacts, more than one unfiltered page
        keys = ["faces-sr2-shards", "faces-sr2-report"]
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        shards_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run.id]}))
        runs = ArtifactFilterFlowRunId(any_=[child.id for child in shards_runs])
        artifacts += client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=runs))
    keyed = {a.key: a for a in artifacts if a.key}
    table = keyed["faces-sr2-shards"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["shard"] for r in rows] == ["32x32/000000", "32x32/000001"]
    assert all(r["status"] == "restored" and r["psnr"] > 0 for r in rows)
    report = keyed["faces-sr2-report"].data
    assert "PSNR" in report and "| sr x2" in report
    progress = [a for a in artifacts if a.type == "progress"]
    assert progress and max(float(a.data) for a in progress) == 100.0


def test_cli_run_status_and_validation(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(job_file), "--set", "task.scale=16"])
    assert bad.exit_code == 2 and "task.scale" in bad.output

    result = runner.invoke(app, ["run", str(job_file), "--set", "name=cli"])
    assert result.exit_code == 0, result.output
    status = runner.invoke(app, ["status", str(tmp_path / "out"), "--json"])
    data = json.loads(status.output)["jobs"][0]
    assert data["counts"] == {"done": 2, "failed": 0, "pending": 0, "quarantined": 0}
    assert set(data["shards"][0]) == {"id", "state", "attempts", "finished_at", "error"}
    text = runner.invoke(app, ["status", str(tmp_path / "out")])
    assert "2 done, 0 failed, 0 pending" in text.output


@pytest.mark.parametrize("kind", ["deblur", "inpaint"])
def test_other_tasks_evaluate(kind: str, make_job, images_8: Path, tmp_path: Path) -> None:
    task = (
        {"kind": "deblur", "kernel": "gaussian", "kernel_size": 7}
        if kind == "deblur"
        else {"kind": "inpaint", "mask": "random"}
    )
    job = make_job(images_8, tmp_path / "out", task=task, shard_size=8)
    state = run_flow(job=job, return_state=True)
    assert state.is_completed(), state.message
    plan = _plan(tmp_path / "out")
    out = DatasetStore.open(plan.output_store)
    name = "kernel" if kind == "deblur" else "mask"
    params = out.read_array(out.shards()[0], f"{plan.measurement_prefix}/{name}")
    assert params.shape[0] == 8 and len({p.tobytes() for p in params}) == 8  # one seeded kernel/mask per image


def test_evaluate_flow_scores_what_is_done_and_lists_the_rest(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out")
    assert run_flow(job=job, shards=["32x32/000001"], return_state=True).is_completed()
    result = score(job=job)
    assert (result["done"], result["shards"]) == (1, 2)
    summary = json.loads((_job_dir(tmp_path / "out") / "summary.json").read_text())
    assert summary["images"] == 4 and summary["metrics"]["psnr"]["count"] == 4
    assert [s["state"] for s in job_status(str(tmp_path / "out"))["shards"]] == ["pending", "done"]


def test_unavailable_backbone_metrics_are_reported_with_their_reason(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out", metrics=["psnr", "lpips", "fid"])
    state = run_flow(job=job, return_state=True)
    assert state.is_completed(), state.message
    report = json.loads((_job_dir(tmp_path / "out") / "summary.json").read_text())
    assert report["metrics"]["psnr"]["count"] == 8
    for name in ("lpips", "fid"):
        reason = report["unavailable"][name]
        assert "no image has a value" not in reason and (
            "install" in reason or "TORCH_HOME" in reason or "hub" in reason
        )
        assert reason in (_job_dir(tmp_path / "out") / "report.md").read_text()


def _unit_runs(flow_run_id) -> tuple[list[str], dict]:
    """Names of the ``restore-unit`` task runs of a ``restore`` flow run's sub-flow, and the sub-flow's parameters."""
    with get_client(sync_client=True) as client:
        (shards_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [flow_run_id]})
        )
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [shards_run.id]}))
    return sorted(t.name for t in runs if t.name.startswith("restore-")), shards_run.parameters


def test_cli_reruns_named_shards_and_a_finished_job_dispatches_nothing(make_job, image_writer, tmp_path: Path) -> None:
    images = tmp_path / "images"
    image_writer(images, 12, seed=2)
    job = make_job(images, tmp_path / "out", shard_size=2, dispatch={"unit_shards": 2, "window": 1})
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    result = CliRunner().invoke(app, ["run", str(job_file), "--shard", "32x32/000004", "--shard", "32x32/000003"])
    assert result.exit_code == 0, result.output
    assert "2 shard(s) run, 0 already done" in result.output
    assert [s["state"] for s in job_status(str(tmp_path / "out"))["shards"]] == ["pending"] * 3 + ["done"] * 2 + [
        "pending"
    ]

    state = run_flow(job=job, return_state=True)
    assert state.is_completed(), state.message
    assert (state.result()["restored"], state.result()["skipped"]) == (4, 2)
    names, parameters = _unit_runs(state.state_details.flow_run_id)
    assert names == [
        "restore-32x32/000000..000001",
        "restore-32x32/000002",
        "restore-32x32/000005",
    ]  # done ones not sent
    assert parameters["selection"] == {"ranges": None} and "shards" not in parameters  # no shard list as a parameter

    loads = prior_loads()
    again = run_flow(job=job, shards=["32x32/000001", "32x32/000002", "32x32/000003"], return_state=True)
    assert again.is_completed() and (again.result()["restored"], again.result()["skipped"]) == (0, 3)
    names, parameters = _unit_runs(again.state_details.flow_run_id)
    assert names == [] and prior_loads() == loads  # all skipped in bulk in the flow: no unit, no prior
    assert parameters["selection"] == {"ranges": [["32x32", 1, 4]]}
