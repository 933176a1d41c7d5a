"""Comparison jobs: variants × tasks on shared measurements, each variant its own array and records, the table."""

import json
from pathlib import Path

import pytest

from diffpir_core.io import DatasetStore
from diffpir_core.runs.job import JobError, parse_job
from diffpir_core.runs.plan import read_plans
from diffpir_flow.flows.run import run

FOUR = [
    {},
    {"method": "dps", "sampler": {"num_steps": 3}},
    {"method": "ddrm", "sampler": {"timesteps": 3}},
    {"method": "dpir", "sampler": {"iter_num": 3}},
]
MINIMAL = {"input": "/data/faces", "output": "/runs/faces"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"method": "foo"}, "method: Input should be 'diffpir', 'dps', 'ddrm' or 'dpir'"),
        (
            {"sampler": {"scale": 0.3}},
            "sampler.scale: not a setting of method diffpir (a setting of dps); allowed: lambda_,",
        ),
        ({"method": "dps", "sampler": {"lambda_": 3}}, "allowed: scale, num_steps, variance"),
        (
            {"method": "ddrm", "task": {"kind": "denoise", "noise_sigma": 0.05}},
            "method: DDRM needs the operator's singular value",
        ),
        (
            {"variants": [{"method": "dpir", "sampler": {"zeta": 1}}]},
            "variants[0].sampler.zeta: not a setting of method dpir",
        ),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variants[1]: two variants are named 'a'"),
    ],
)
def test_bad_method_settings_are_refused_naming_the_field(change: dict, expected: str) -> None:
    with pytest.raises(JobError) as err:
        parse_job({**MINIMAL, **change})
    assert expected in str(err.value)


def test_variants_expand_to_runs_with_their_own_hashes_and_ddrm_na_without_svd() -> None:
    job = parse_job(
        {
            **MINIMAL,
            "sampler": {"iter_num": 20},
            "tasks": [{"kind": "denoise", "noise_sigma": 0.05}, {"kind": "inpaint", "mask": "box"}],
            "variants": [{}, {"method": "ddrm"}, {"name": "sweep", "grid": {"lambda_": [1, 7], "zeta": [0.3]}}],
        }
    )
    runs = job.cells()
    assert [(r.name, r.task) for r in runs] == [
        ("diffpir", "denoise"),
        ("ddrm", "denoise"),
        ("sweep lambda_=1, zeta=0.3", "denoise"),
        ("sweep lambda_=7, zeta=0.3", "denoise"),
        ("diffpir", "inpaint-box"),
        ("ddrm", "inpaint-box"),
        ("sweep lambda_=1, zeta=0.3", "inpaint-box"),
        ("sweep lambda_=7, zeta=0.3", "inpaint-box"),
    ]
    assert runs[1].job is None and "singular value decomposition" in runs[1].reason
    assert runs[5].job is not None and runs[5].job.sampler_config().nfes == 20
    assert (
        runs[2].job.sampler_config().iter_num == 20 and runs[2].job.sampler_config().lambda_ == 1.0
    )  # job's sampler inherited
    assert runs[2].swept == {"lambda_": 1, "zeta": 0.3}
    assert len({r.job.job_hash() for r in runs if r.job}) == 7
    plain = parse_job({**MINIMAL, "sampler": {"iter_num": 20}, "task": {"kind": "inpaint", "mask": "box"}})
    assert runs[4].job.job_hash() == plain.job_hash()  # a variant is the plain job it describes


def test_diffpir_job_hash_is_unchanged_by_the_method_field() -> None:
    # hashes of main without the method field (1733899, after DiffPIRConfig.numerics)
    assert parse_job(MINIMAL).job_hash() == "2ea81a11079922ae9d2fb0df1da0af3d426ec614ef65c4163a401794c4343052"
    deblur = {
        **MINIMAL,
        "task": {"kind": "deblur", "kernel": "gaussian", "noise_sigma": 0.05},
        "sampler": {"lambda_": 3},
    }
    assert parse_job(deblur).job_hash() == "517bb1e09c82582395a9c77994ce875321f7015b9b4d79a273fde6e568072198"
    assert parse_job({**deblur, "method": "diffpir"}).job_hash() == parse_job(deblur).job_hash()
    assert parse_job({**MINIMAL, "method": "dpir"}).job_hash() != parse_job(MINIMAL).job_hash()


def test_comparison_shares_measurements_reruns_nothing_and_runs_only_a_new_variant(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = make_job(images_8, out, variants=FOUR, task={"kind": "inpaint", "mask": "box"})
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["shards"], summary["restored"], summary["skipped"]) == (8, 8, 0)
    plans = read_plans(str(out), {})
    assert len(plans) == 4 and len({p.measurement_store for p in plans}) == 1 and plans[0].measurement_store
    shared = DatasetStore.open(plans[0].measurement_store)
    written = [shared.read_record(ref, f"{plans[0].measurement_prefix}/y") for ref in shared.shards()]
    assert all(record is not None for record in written)
    stamps = sorted(record.written_at for record in written)
    for plan in plans:  # each variant: own array, own records, no measurements of its own
        own = DatasetStore.open(plan.output_store)
        assert all(own.read_record(ref, plan.restored_array) for ref in own.shards())
        assert all(own.read_record(ref, f"{plan.measurement_prefix}/y") is None for ref in own.shards())

    table = summary["variants"]
    assert [(row["variant"], row["task"], row["nfes"]) for row in table] == [
        ("diffpir", "inpaint-box", 3),
        ("dps num_steps=3", "inpaint-box", 3),
        ("ddrm timesteps=3", "inpaint-box", 4),  # range(0, 1000, 333): 4 calls
        ("dpir iter_num=3", "inpaint-box", 3),
    ]
    assert table[1]["backward_passes"] == 3 and table[0]["backward_passes"] == 0
    assert all(row["images"] == 8 and row["psnr"] > 5 and row["seconds_per_image"] > 0 for row in table)
    report = Path(summary["report"])
    assert json.loads(report.with_name("summary.json").read_text())["table"] == json.loads(json.dumps(table))
    markdown = report.with_name("report.md").read_text()
    assert sum(line.startswith("| inpaint-box |") for line in markdown.splitlines()) == 4
    assert report.read_text().count('<div class="sample">') == 2  # report.samples: 2 images, one column per variant

    _names_say_variant_and_task(state.state_details.flow_run_id, out, tmp_path, images_8.name)

    again = run(job=job, return_state=True).result()
    assert (again["restored"], again["skipped"]) == (0, 8)
    assert (
        sorted(
            r.written_at
            for r in (shared.read_record(ref, f"{plans[0].measurement_prefix}/y") for ref in shared.shards())
        )
        == stamps
    )

    more = make_job(
        images_8,
        out,
        variants=[*FOUR, {"name": "dpir-x1", "method": "dpir", "sampler": {"iter_num": 3, "x8": False}}],
        task={"kind": "inpaint", "mask": "box"},
    )
    grown = run(job=more, return_state=True).result()
    assert (grown["restored"], grown["skipped"]) == (2, 8)
    assert [row["variant"] for row in grown["variants"]][-1] == "dpir-x1"


def test_grid_report_plots_psnr_against_each_swept_setting(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(
        images_8,
        tmp_path / "out",
        shard_size=8,
        batch_size=8,
        variants=[{"grid": {"lambda_": [1, 7], "zeta": [0.3, 1.0]}}],
    )
    summary = run(job=job, return_state=True).result()
    assert [row["swept"] for row in summary["variants"]] == [
        {"lambda_": 1, "zeta": 0.3},
        {"lambda_": 1, "zeta": 1.0},
        {"lambda_": 7, "zeta": 0.3},
        {"lambda_": 7, "zeta": 1.0},
    ]
    page = Path(summary["report"]).read_text()
    assert 'alt="PSNR against λ"' in page and 'alt="PSNR against ζ"' in page  # human labels, not lambda_


def _names_say_variant_and_task(flow_run_id, out: Path, tmp_path: Path, data: str) -> None:
    """The comparison's runs, artifacts and exports name the variant and the task (four sub-flows used to share one
    name, and export needed one of four hashes)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter
    from typer.testing import CliRunner

    from diffpir_flow.cli.app import app

    wanted = {f"{data}-dps-num-steps-3-inpaint-box-report", f"{data}-diffpir-inpaint-box-shards"}
    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(flow_run_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [flow_run_id]}))
        # asked by key: the session's server holds every test's artifacts, more than one unfiltered page
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=sorted(wanted))))
        keys = {a.key for a in found}
    assert parent.name == f"compare-4-variants-1-tasks-{data}-evaluate"
    assert sorted(run.name for run in children if run.name.endswith("-shards")) == [
        f"{variant}-inpaint-box-{data}-evaluate-shards"
        for variant in ("ddrm-timesteps=3", "diffpir", "dpir-iter_num=3", "dps-num_steps=3")
    ]
    assert wanted <= keys
    plans = {plan.variant: plan for plan in read_plans(str(out), {})}
    assert sorted(plans) == ["ddrm timesteps=3", "diffpir", "dpir iter_num=3", "dps num_steps=3"]
    runner = CliRunner()
    chosen = runner.invoke(
        app, ["export", str(out), str(tmp_path / "dps"), "--variant", "DPS num_steps=3", "--task", "inpaint-box"]
    )
    assert chosen.exit_code == 0 and "exported 8 PNGs" in chosen.output, chosen.output
    several = runner.invoke(app, ["export", str(out), str(tmp_path / "x"), "--task", "inpaint-box"])
    assert several.exit_code != 0 and "--all" in several.output and "variant 'dps num_steps=3'" in several.output
    every = runner.invoke(app, ["export", str(out), str(tmp_path / "all"), "--all"])
    assert every.exit_code == 0, every.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "ddrm-timesteps=3-inpaint-box",
        "diffpir-inpaint-box",
        "dpir-iter_num=3-inpaint-box",
        "dps-num_steps=3-inpaint-box",
    ]
