"""Tuning jobs on a real Prefect API: the search runs its trials through the run pipeline, keeps a record per trial,
writes the tuned file a job can use (``tuned:``), prunes poor trials, and resumes after SIGKILL without running a
finished trial again. Tiny prior, 32×32 images, 3 sampler steps: the tests measure the machinery, not DiffPIR."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffpir_core.runs.job import Job, JobError, parse_job
from diffpir_core.runs.plan import read_plans
from diffpir_core.tuning.search import read_records, tuning_folder
from diffpir_flow.cli.app import app
from diffpir_flow.flows.run import run

LAMBDA = {"low": 0.5, "high": 30.0, "log": True}


def _tuning_job(make_job, images: Path, output: Path, **tune) -> Job:
    spec = {"params": {"lambda_": LAMBDA, "zeta": {"low": 0.1, "high": 1.0}}, "trials": 3, "subset": {"count": 4}}
    return make_job(images, output, tune={**spec, **tune}, shard_size=4, batch_size=1)


def _shard_records(output: Path, job_hash: str) -> dict[str, int]:
    """Record file -> mtime (ns) of every restored shard of the job ``job_hash`` in ``output``."""
    folder = output / "jobs" / job_hash[:16] / "restored.zarr" / "records"
    return {str(p): p.stat().st_mtime_ns for p in folder.glob("*/restored/*/*.json")}


def test_tuned_file_round_trip(make_job, image_writer, tmp_path: Path) -> None:
    """The tuned file holds the best complete trial's settings, objective and identity; a job naming it runs with
    those values (its plan says so, and its hash is that of the same values given in ``sampler:``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
        FlowRunFilter,
    )

    images = tmp_path / "images"
    image_writer(images, 6, seed=1)
    job = _tuning_job(make_job, images, tmp_path / "tuned", prune=False)
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    records = read_records(job)
    assert [r.number for r in records] == [0, 1, 2] and all(r.state == "complete" and r.images == 4 for r in records)
    best = max(records, key=lambda r: r.value)
    tuned = json.loads((tmp_path / "tuned" / "tuned.json").read_text())
    assert tuned["sampler"] == best.params and tuned["objective"] == {
        "name": "psnr",
        "direction": "maximize",
        "value": best.value,
    }
    assert tuned["valid_for"] == {
        "task": {"kind": "sr", "scale": 2, "noise_sigma": 0.05},
        "noise_sigma": 0.05,
        "prior": job.prior,
        "method": "diffpir",
    }
    assert len(tuned["subset"]) == 4 and tuned["trials"] == 3
    table = json.loads((tmp_path / "tuned" / tuning_folder(job) / "summary.json").read_text())["trials"]
    assert [row["psnr"] for row in table] == [r.value for r in records] == [row["psnr"] for row in summary["trials"]]
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [flow_run_id]}))
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["progress"])
            )
        )
    assert sorted(r.name.split("-lambda_")[0] for r in children) == ["trial-0", "trial-1", "trial-2"]
    (artifact,) = progress  # the trials, counted in the parent run
    assert artifact.data == 100.0 and artifact.description.startswith("3/3 trials (0 pruned); best psnr")

    user = make_job(images, tmp_path / "use", tuned=str(tmp_path / "tuned" / "tuned.json"))
    settings = user.sampler_settings()
    assert {name: getattr(settings.config, name) for name in best.params} == best.params
    assert settings.sources["lambda_"] == f"tuned {tmp_path / 'tuned' / 'tuned.json'}"
    assert user.job_hash() == make_job(images, tmp_path / "use", sampler={"iter_num": 3, **best.params}).job_hash()
    assert run(job=user, return_state=True).is_completed()
    (plan,) = read_plans(str(tmp_path / "use"), {})
    assert {name: plan.sampler[name] for name in best.params} == best.params


def test_tuned_file_for_another_job_is_refused_naming_the_difference(make_job, image_writer, tmp_path: Path) -> None:
    images = tmp_path / "images"
    image_writer(images, 4)
    job = _tuning_job(make_job, images, tmp_path / "tuned", trials=1, prune=False)
    assert run(job=job, return_state=True).is_completed()
    tuned = str(tmp_path / "tuned" / "tuned.json")
    with pytest.raises(JobError) as err:
        make_job(images, tmp_path / "x", tuned=tuned, task={"kind": "sr", "scale": 4, "noise_sigma": 0.1})
    assert "task.scale: tuned for 2, this job has 4" in str(err.value)
    assert "noise_sigma: tuned for 0.05, this job has 0.1" in str(err.value)
    with pytest.raises(JobError, match="method: tuned for 'diffpir', this job has 'dps'"):
        make_job(images, tmp_path / "x", tuned=tuned, method="dps", sampler={})
    with pytest.raises(JobError, match=r"tuned: .*missing.json does not exist"):
        make_job(images, tmp_path / "x", tuned=str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text('{"kind": "diffpir-tuned-settings"')
    with pytest.raises(JobError, match=r"tuned: .*broken.json is not a tuned settings file"):
        make_job(images, tmp_path / "x", tuned=str(tmp_path / "broken.json"))


def test_dry_run_shows_the_tuned_source(make_job, image_writer, tmp_path: Path) -> None:
    images = tmp_path / "images"
    image_writer(images, 4)
    job = _tuning_job(make_job, images, tmp_path / "tuned", trials=1, prune=False)
    assert run(job=job, return_state=True).is_completed()
    tuned = tmp_path / "tuned" / "tuned.json"
    lam = json.loads(tuned.read_text())["sampler"]["lambda_"]
    job_file = tmp_path / "job.yaml"
    job_file.write_text(make_job(images, tmp_path / "use", tuned=str(tuned)).to_yaml())
    result = CliRunner().invoke(app, ["run", str(job_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"#   lambda_:          {lam!s:<8} from tuned {tuned}" in result.output
    tuning_file = tmp_path / "tune.yaml"
    tuning_file.write_text(job.to_yaml())
    planned = CliRunner().invoke(app, ["run", str(tuning_file), "--dry-run"])
    assert "tuning: budget: 1 trials x 4 subset image(s) x at most 3 network calls" in planned.output, planned.output


def test_restore_mode_refuses_a_ground_truth_objective_before_any_work(tmp_path: Path, tiny_prior: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        json.dumps(
            {
                "input": str(tmp_path / "in"),
                "output": str(tmp_path / "out"),
                "mode": "restore",
                "task": {"kind": "sr", "scale": 2, "noise_sigma": 0.05},
                "prior": str(tiny_prior),
                "tune": {"params": {"lambda_": LAMBDA}, "objective": "psnr"},
            }
        )
    )
    result = CliRunner().invoke(app, ["run", str(job_file)])
    assert result.exit_code == 2
    assert "tune.objective: objective psnr needs ground truth, which mode restore does not have" in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(JobError, match="tune.params.zeta: Input should be less than or equal to 1"):
        parse_job({**json.loads(job_file.read_text()), "tune": {"params": {"zeta": {"low": 0.1, "high": 2}}}})


def test_pruning_stops_trials_in_an_absurd_region_after_their_first_images(
    make_job, image_writer, tmp_path: Path
) -> None:
    """λ is either sensible or absurd (the prior alone, the measurement ignored): every trial at the absurd value that
    follows a finished sensible one is pruned after its first stage (its later images are never restored), and no
    sensible trial is."""
    images = tmp_path / "images"
    image_writer(images, 4, seed=2)
    good, absurd = 1.0, 1e5
    job = make_job(
        images,
        tmp_path / "pruned",
        tune={"params": {"lambda_": {"choices": [good, absurd]}}, "trials": 6, "subset": {"count": 4}, "seed": 3},
    )
    assert run(job=job, return_state=True).is_completed()
    records = read_records(job)
    by_value = {r.params["lambda_"] for r in records}
    assert by_value == {good, absurd}, "the seed must try both values"
    first_good = min(r.number for r in records if r.params["lambda_"] == good and r.state == "complete")
    judged = [r for r in records if r.number > first_good]
    assert all(r.state == ("pruned" if r.params["lambda_"] == absurd else "complete") for r in judged), records
    assert any(r.state == "pruned" for r in records)
    for record in records:
        restored = len(_shard_records(tmp_path / "pruned", record.job_hash))
        assert restored == 4 if record.params["lambda_"] == good else restored >= 1
        if record.state == "pruned":
            assert record.images == 1  # the first stage only


def test_killed_tuning_resumes_without_running_finished_trials(
    prefect_api: str, make_job, image_writer, tmp_path: Path, spawn_cli_run
) -> None:
    images = tmp_path / "images"
    image_writer(images, 4, seed=4)
    job = _tuning_job(make_job, images, tmp_path / "killed", trials=5, prune=False)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
    }
    trials = tmp_path / "killed" / tuning_folder(job) / "trials"
    child = spawn_cli_run(job_file, env)
    try:
        deadline = time.monotonic() + 240
        while len(list(trials.glob("*.json"))) < 2:
            assert child.poll() is None, f"the job ended before it was killed: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    before = read_records(job)
    assert 2 <= len(before) < 5
    kept = {r.number: _shard_records(tmp_path / "killed", r.job_hash) for r in before}
    files = {p.name: p.stat().st_mtime_ns for p in trials.glob("*.json")}

    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    after = read_records(job)
    assert [r.number for r in after] == [0, 1, 2, 3, 4]
    assert [r for r in after if r.number in kept] == before  # the finished trials kept, not run again
    assert {p.name: p.stat().st_mtime_ns for p in trials.glob("*.json") if p.name in files} == files
    for number, shards in kept.items():
        assert len(shards) == 4 and _shard_records(tmp_path / "killed", after[number].job_hash) == shards
    assert len({r.job_hash for r in after}) == 5
    # the trial the kill interrupted was proposed again with the same settings: no sixth job folder
    assert len(list((tmp_path / "killed" / "jobs").iterdir())) == 5
