"""The job model: YAML in and out, validation that names the field, overrides, the job hash."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from diffpir_core.runs import options
from diffpir_core.runs.job import Job, JobError, apply_overrides, load_job, parse_job
from diffpir_core.runs.plan import measurement_hash
from diffpir_core.task_kinds import TASK_KINDS

REPO = Path(__file__).resolve().parents[3]
MINIMAL = {"input": "/data/faces", "output": "/runs/faces"}


def test_defaults_and_yaml_round_trip(tmp_path: Path) -> None:
    job = parse_job(MINIMAL)
    assert (job.mode, job.task.kind, job.task.scale, job.task.noise_sigma) == ("evaluate", "sr", 4, 0.05)
    assert (job.prior, job.shard_size, job.batch_size, job.device, job.precision) == ("demo", 16, 4, "auto", "fp32")
    assert job.runner.kind == "local" and job.runner.max_workers == 1
    assert job.effective_metrics() == ["psnr", "ssim"]
    path = tmp_path / "job.yaml"
    path.write_text(job.to_yaml())
    again = load_job(path)
    assert again == job and again.job_hash() == job.job_hash()


def test_issue_example_keys_parse(tmp_path: Path) -> None:
    text = """
input: ./images
output: s3://bucket/jobs/faces-sr4
mode: evaluate
task: {kind: sr, scale: 4, noise_sigma: 0.05}
prior: demo
sampler: {iter_num: 100, lambda_: 7.0, zeta: 0.3}
shard_size: 16
batch_size: 4
device: auto
precision: fp32
runner: {kind: local}
metrics: [psnr, ssim, lpips, fid]
seed: 0
storage_options: {endpoint_url: http://127.0.0.1:5000}
"""
    (tmp_path / "job.yaml").write_text(text)
    job = load_job(tmp_path / "job.yaml")
    assert job.input == str((tmp_path / "images").resolve())  # relative to the job file
    assert job.output == "s3://bucket/jobs/faces-sr4"
    config = job.sampler_config()
    assert (config.iter_num, config.lambda_, config.zeta, config.noise_sigma) == (100, 7.0, 0.3, 0.05)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task": {"kind": "sr", "scale": 16}}, "task.scale"),
        ({"task": {"kind": "blur"}}, "task"),
        ({"task": {"kind": "deblur", "kernel_size": 60}}, "task.kernel_size"),
        ({"sampler": {"lamda": 3}}, "sampler.lamda"),
        ({"sampler": {"iter_num": 0}}, "sampler.iter_num"),
        ({"sampler": {"noise_sigma": 0.1}}, "sampler"),
        ({"task": {"kind": "sr", "scale": 5}}, "task.scale"),
        ({"shard_size": 0}, "shard_size"),
        ({"device": "gpu"}, "device"),
        ({"runner": {"kind": "dask", "address": "tcp://h:8786", "cluster_kwargs": {"n_workers": 2}}}, "runner"),
        ({"mode": "restore", "metrics": ["psnr"]}, "metrics"),
        ({"mode": "restore", "task": {"kind": "deblur", "kernel": "gaussian"}}, "task.kernel"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_job_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(JobError) as err:
        parse_job({**MINIMAL, **change})
    assert f"\n{field}:" in str(err.value)


def test_missing_required_fields_are_listed() -> None:
    with pytest.raises(JobError, match=r"input: Field required[\s\S]*output: Field required"):
        parse_job({})


def test_overrides_set_nested_fields_with_yaml_values(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**MINIMAL, "task": {"kind": "sr", "scale": 4}}))
    job = load_job(
        tmp_path / "job.yaml", ["task.scale=2", "sampler.lambda_=3.5", "runner={kind: local, max_workers: 3}"]
    )
    assert job.task.scale == 2 and job.sampler == {"lambda_": 3.5}
    assert job.runner.max_workers == 3
    with pytest.raises(JobError, match="expected key=value"):
        apply_overrides({}, ["task.scale"])


def test_job_hash_follows_the_pixels_not_the_scheduling() -> None:
    base = parse_job(MINIMAL)
    same = [
        {"runner": {"kind": "dask", "address": "tcp://127.0.0.1:8786"}},
        {"batch_size": 1},
        {"metrics": ["psnr"]},
        {"output": "/elsewhere"},
        {"storage_options": {"endpoint_url": "http://x"}},
    ]
    different = [
        {"sampler": {"lambda_": 3.0}},
        {"prior": "ffhq_256"},
        {"seed": 1},
        {"task": {"kind": "sr", "scale": 2}},
        {"shard_size": 8},
        {"precision": "bf16"},
    ]
    for change in same:
        assert parse_job({**MINIMAL, **change}).job_hash() == base.job_hash(), change
    hashes = {parse_job({**MINIMAL, **change}).job_hash() for change in different}
    assert len(hashes) == len(different) and base.job_hash() not in hashes


def test_kernel_and_mask_files_count_by_their_bytes_not_their_path(tmp_path: Path) -> None:
    np.save(tmp_path / "kernel.npy", np.ones((3, 3)))
    shutil.copy(tmp_path / "kernel.npy", tmp_path / "same-bytes.npy")
    Image.new("L", (8, 8), 255).save(tmp_path / "mask.png")
    deblur = parse_job({**MINIMAL, "task": {"kind": "deblur", "kernel": str(tmp_path / "kernel.npy")}})
    moved = parse_job({**MINIMAL, "task": {"kind": "deblur", "kernel": str(tmp_path / "same-bytes.npy")}})
    inpaint = parse_job({**MINIMAL, "task": {"kind": "inpaint", "mask": str(tmp_path / "mask.png")}})
    assert deblur.job_hash() == moved.job_hash()
    before = {job.job_hash(): measurement_hash(job.task_identity(), job.seed) for job in (deblur, inpaint)}
    np.save(tmp_path / "kernel.npy", np.eye(3))
    Image.new("L", (8, 8), 0).save(tmp_path / "mask.png")
    after = {job.job_hash(): measurement_hash(job.task_identity(), job.seed) for job in (deblur, inpaint)}
    assert not before.keys() & after.keys() and not set(before.values()) & set(after.values())
    generated = parse_job({**MINIMAL, "task": {"kind": "deblur", "kernel": "gaussian"}})
    assert generated.task_identity() == generated.task.identity()  # no file, nothing read


def test_secrets_never_leave_in_yaml() -> None:
    job = parse_job({**MINIMAL, "storage_options": {"key": "AKIA123", "secret": "s3cr3t", "endpoint_url": "http://e"}})
    text = job.to_yaml()
    assert "s3cr3t" not in text and "AKIA123" not in text and "http://e" in text


def test_credentials_never_reach_the_json_prefect_stores() -> None:
    """Prefect stores flow-run parameters as the job's JSON (``jsonable_encoder``), so credentials must not be in it at
    any depth, while the job in memory keeps them; the parameter schema makes the server refuse them outright."""
    from fastapi.encoders import jsonable_encoder
    from jsonschema import Draft202012Validator

    options = {
        "endpoint_url": "http://e",
        "key": "AKIA123",
        "secret": "s3cr3t",
        "client_kwargs": {"aws_session_token": "t0k", "region_name": "r"},
    }
    job = parse_job({**MINIMAL, "storage_options": options})
    assert job.storage_options == options
    for stored in (json.dumps(jsonable_encoder(job)), job.model_dump_json(), job.to_yaml()):
        assert not {"AKIA123", "s3cr3t", "t0k"} & set(re.findall(r"\w+", stored)) and "http://e" in stored
    assert jsonable_encoder(job)["storage_options"] == {
        "endpoint_url": "http://e",
        "client_kwargs": {"region_name": "r"},
    }
    schema = Draft202012Validator(Job.model_json_schema()["properties"]["storage_options"])
    assert schema.is_valid({"endpoint_url": "http://e", "client_kwargs": {}})
    assert not schema.is_valid({"endpoint_url": "http://e", "secret": "s3cr3t"}) and not schema.is_valid(
        {"key": "AKIA123"}
    )


def test_run_labels() -> None:
    job = parse_job({**MINIMAL, "task": {"kind": "deblur", "kernel": "motion"}})
    assert (job.task_label(), job.dataset_name()) == ("deblur-motion", "faces")
    assert parse_job({**MINIMAL, "input": "s3://b/sets/celeba.zarr/"}).dataset_name() == "celeba"


def test_every_job_field_is_documented() -> None:
    doc = (REPO / "docs" / "jobs.md").read_text()
    documented = set(re.findall(r"^\|\s*`([a-z_.]+)`", doc, flags=re.MULTILINE))
    fields = set(Job.model_fields)
    for name in ("task", "runner", "ingest", "report"):
        fields.discard(name)
    for prefix, model in (
        ("task", tuple(TASK_KINDS.values())),
        ("runner", (options.LocalRunner, options.DaskRunner)),
        ("ingest", (options.IngestOptions,)),
        ("report", (options.ReportOptions,)),
        ("dispatch", (options.DispatchOptions,)),
    ):
        for model_class in model:
            fields |= {f"{prefix}.{f}" for f in model_class.model_fields}
    assert fields <= documented, sorted(fields - documented)


def test_example_jobs_are_valid() -> None:
    files = sorted((REPO / "jobs").rglob("*.yaml"))
    assert len(files) >= 14
    for path in files:
        load_job(path)


def test_sampler_settings_come_from_preset_then_prior_card_then_job(tmp_path: Path) -> None:
    card = parse_job({**MINIMAL, "prior": "demo"}).sampler_settings()
    assert (card.config.lambda_, card.config.zeta, card.config.iter_num) == (2.0, 1.0, 100)
    assert card.sources["lambda_"] == "prior card (demo)" and card.sources["noise_sigma"] == "task"
    assert card.sources["skip_type"] == "default"
    job = parse_job({**MINIMAL, "prior": "demo", "sampler": {"lambda_": 5.0}}).sampler_settings()
    assert (job.config.lambda_, job.sources["lambda_"], job.config.zeta) == (5.0, "job", 1.0)
    bare = parse_job({**MINIMAL, "prior": str(tmp_path / "mine.safetensors")}).sampler_settings()
    assert (bare.config.lambda_, bare.config.zeta, bare.sources["lambda_"]) == (7.0, 0.25, "task preset")
    (tmp_path / "mine.json").write_text('{"sampler": {"sr": {"zeta": 0.5}}}')
    carded = parse_job({**MINIMAL, "prior": str(tmp_path / "mine.safetensors")}).sampler_settings()
    assert (carded.config.lambda_, carded.config.zeta) == (7.0, 0.5)


def test_example_job_on_the_demo_prior_gets_the_tuned_settings() -> None:
    config = load_job(REPO / "jobs" / "local-sr4.yaml").sampler_config()
    assert (config.lambda_, config.zeta, config.iter_num, config.nfes) == (2.0, 1.0, 100, 100)


def test_dry_run_shows_where_each_sampler_value_comes_from_and_rejects_bad_scales() -> None:
    from typer.testing import CliRunner

    from diffpir_flow.cli.app import app

    job_file = str(REPO / "jobs" / "local-sr4.yaml")
    shown = CliRunner().invoke(app, ["run", job_file, "--dry-run", "--set", "sampler.iter_num=20"])
    assert shown.exit_code == 0, shown.output
    lines = {line.split(":")[0].strip("# "): line for line in shown.output.splitlines() if line.startswith("#   ")}
    assert "from prior card (demo)" in lines["lambda_"] and "2.0" in lines["lambda_"]
    assert "from job" in lines["iter_num"] and "from task" in lines["noise_sigma"]
    assert "20 network calls per image" in shown.output
    bad = CliRunner().invoke(app, ["run", job_file, "--dry-run", "--set", "task.scale=5"])
    assert bad.exit_code == 2
    assert "task.scale: Input should be 2, 3, 4 or 8 (got 5)" in bad.output


def test_set_paths_resolve_from_where_the_command_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in the job file resolve from its folder; paths given with --set from the current folder, ``~``
    expanded."""
    (tmp_path / "jobs").mkdir()
    job_file = tmp_path / "jobs" / "job.yaml"
    job_file.write_text(yaml.safe_dump({"input": "data/in", "output": "../out", "task": {"kind": "sr", "scale": 2}}))
    (tmp_path / "typed-here").mkdir()
    monkeypatch.chdir(tmp_path / "typed-here")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    job = load_job(job_file)
    assert (job.input, job.output) == (str(tmp_path / "jobs" / "data" / "in"), str(tmp_path / "out"))
    job = load_job(job_file, ["input=photos/raw", "output=~/results"])
    assert (job.input, job.output) == (
        str(tmp_path / "typed-here" / "photos" / "raw"),
        str(tmp_path / "home" / "results"),
    )
    job = load_job(
        job_file, ["input=photos", "task={kind: inpaint, mask: box}"]
    )  # a bare folder name is a folder here
    assert (job.input, job.task.mask) == (str(tmp_path / "typed-here" / "photos"), "box")


def test_an_unknown_field_suggests_the_close_one() -> None:
    with pytest.raises(
        JobError, match=r"task\.noise_sgima: Extra inputs are not permitted; did you mean `noise_sigma`\?"
    ):
        parse_job({"input": "/in", "output": "/out", "task": {"kind": "sr", "scale": 2, "noise_sgima": 0.05}})
    with pytest.raises(JobError, match=r"shard_sise: .*did you mean `shard_size`\?"):
        parse_job({"input": "/in", "output": "/out", "shard_sise": 4})
