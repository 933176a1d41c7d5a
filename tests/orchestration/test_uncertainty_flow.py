"""Uncertainty end to end through the run flow and the CLI: evaluate mode fits a calibration and measures it (summary,
report, the report artifact's sentence); a restore-mode job takes that file and its std export is named calibrated;
without one every output says "uncalibrated"; export --what std|samples keep the --overwrite checks."""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from typer.testing import CliRunner

from diffpir_core.io import DatasetStore
from diffpir_core.runs.plan import read_plans
from diffpir_flow.cli.app import app
from diffpir_flow.flows.run import run as run_flow


def _job_dir(output: Path) -> Path:
    (plan,) = read_plans(str(output), {})
    return Path(plan.job_dir)


def _export(output: Path, destination: Path, *options: str) -> str:
    result = CliRunner().invoke(app, ["export", str(output), str(destination), *options])
    assert result.exit_code == 0, result.output
    return result.output


def test_evaluate_calibrates_and_restore_mode_takes_the_file(make_job, image_writer, tmp_path: Path) -> None:
    image_writer(tmp_path / "img", 12)
    fit = {"samples": 2, "calibration_fraction": 0.5, "delta": 0.25}
    reflect = {"kind": "sr", "scale": 2, "noise_sigma": 0.05, "boundary": "reflect"}  # restore mode's default
    job = make_job(tmp_path / "img", tmp_path / "eval", name="uq", task=reflect, uncertainty=fit)
    state = run_flow(job=job, return_state=True)
    assert state.is_completed(), state.message
    folder = _job_dir(tmp_path / "eval")
    summary = json.loads((folder / "summary.json").read_text())
    entry = summary["coverage"]
    assert entry["calibrated"] and entry["n_calibration"] + entry["n_test"] == 12 and summary["nfes"] == 2 * 3
    sentence = f"Calibrated intervals covered ≥ 90% of the pixels on {entry['covered_images']} of {entry['n_test']}"
    assert sentence in (folder / "report.md").read_text()
    assert "half-width" in (folder / "report.html").read_text()
    with get_client(sync_client=True) as client:
        keys = ArtifactFilterKey(any_=["uq-sr2-report"])
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))
    assert sentence in artifact.data

    calibration = folder / "calibration.json"
    restore = make_job(
        tmp_path / "img",
        tmp_path / "restore",
        mode="restore",
        metrics=["consistency"],
        uncertainty={"samples": 2, "calibration": str(calibration)},
    )
    assert run_flow(job=restore, return_state=True).is_completed()
    restored = json.loads((_job_dir(tmp_path / "restore") / "summary.json").read_text())["coverage"]
    assert restored["calibrated"] and restored["scale"] == json.loads(calibration.read_text())["scale"]
    assert restored["delta"] == 0.25  # the promise is the calibration's, not the restore job's default delta 0.1
    assert "with probability ≥ 75%" in (_job_dir(tmp_path / "restore") / "report.md").read_text()
    _export(tmp_path / "restore", tmp_path / "std", "--what", "std")
    assert len(list((tmp_path / "std").glob("*.half-width-calibrated.png"))) == 12
    assert json.loads((tmp_path / "std" / "colour-scale.json").read_text())["label"] == "calibrated"


def test_uncalibrated_std_is_labelled_and_exported_with_the_overwrite_checks(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = make_job(images_8, out, mode="restore", metrics=["consistency"], uncertainty={"samples": 2})
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    runner = CliRunner()
    dry = runner.invoke(app, ["run", str(job_file), "--dry-run"])
    assert "cost: 6 network calls per image (2 posterior samples x 3)" in dry.output, dry.output
    assert "(3 network calls per sample, 2 samples per image)" in dry.output
    result = runner.invoke(app, ["run", str(job_file)])
    assert result.exit_code == 0, result.output
    folder = _job_dir(out)
    assert json.loads((folder / "summary.json").read_text())["coverage"]["label"] == "uncalibrated"
    assert "## Uncertainty: std, uncalibrated" in (folder / "report.md").read_text()
    assert "uncalibrated" in (folder / "report.html").read_text()

    said = _export(out, tmp_path / "std", "--what", "std")
    assert "exported 8 PNGs" in said
    heatmaps = sorted((tmp_path / "std").glob("img*.png"))
    assert [p.name for p in heatmaps] == [f"img{i:03d}.std-uncalibrated.png" for i in range(8)]
    legend = json.loads((tmp_path / "std" / "colour-scale.json").read_text())
    assert legend["label"] == "uncalibrated" and legend["scale"] is None and legend["vmax"] == 0.1
    assert np.asarray(Image.open(heatmaps[0])).shape == (64, 64, 3)  # restore mode: SR x2 of 32x32 inputs
    again = runner.invoke(app, ["export", str(out), str(tmp_path / "std"), "--what", "std"])
    assert again.exit_code != 0 and "--overwrite" in again.output, again.output
    _export(out, tmp_path / "std", "--what", "std", "--overwrite")

    _export(out, tmp_path / "samples", "--what", "samples")
    (plan,) = read_plans(str(out), {})
    store = DatasetStore.open(plan.output_store)
    ref = store.shards()[0]
    for k in (0, 1):
        png = np.asarray(Image.open(tmp_path / "samples" / f"sample-{k}" / f"{ref.ids[0].removesuffix('.png')}.png"))
        np.testing.assert_array_equal(png, store.read_array(ref, f"samples/{k}")[0])
    plain = make_job(images_8, tmp_path / "plain", mode="restore", metrics=["consistency"])
    assert run_flow(job=plain, return_state=True).is_completed()
    refused = runner.invoke(app, ["export", str(tmp_path / "plain"), str(tmp_path / "none"), "--what", "std"])
    assert refused.exit_code != 0 and "has no posterior samples" in " ".join(refused.output.replace("│", " ").split())
