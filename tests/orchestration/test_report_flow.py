"""Reports of real jobs (tiny prior, real Prefect, Zarr and SeaweedFS S3): the classical baseline in every job,
the report's pictures and plots, and the UI artifacts (sample strip, gain, links, progress)."""

import base64
import csv
import io
import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import s3fs
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from diffpir_core.runs.results import shown_shards
from diffpir_flow.flows.run import run


def _artifacts(flow_run_id) -> dict:
    """The artifacts of one flow run and its sub-flow runs, by key (progress artifacts under "progress")."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [flow_run_id]}))
        ids = [flow_run_id, *(run.id for run in runs)]
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": ids}))
    keyed = {a.key: a for a in artifacts if a.key}
    keyed["progress"] = [a for a in artifacts if a.type == "progress"]
    return keyed


def _report_dir(state) -> Path:
    return Path(state.result()["report"]).parent


def test_evaluate_job_scores_the_baseline_and_pictures_it(make_job, images_8: Path, tmp_path: Path) -> None:
    job = make_job(images_8, tmp_path / "out", name="pictured", metrics=["psnr", "ssim"])
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    folder = _report_dir(state)

    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert len(rows) == 8 and {"baseline_psnr", "baseline_ssim", "gain_psnr", "gain_ssim"} <= set(rows[0])
    for row in rows:
        assert float(row["gain_psnr"]) == pytest.approx(float(row["psnr"]) - float(row["baseline_psnr"]), abs=1e-9)
        assert 5 < float(row["baseline_psnr"]) < 60
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["baseline"]["method"] == "bicubic" and summary["baseline"]["images"] == 8
    mean_gain = np.mean([float(row["gain_psnr"]) for row in rows])
    assert summary["metrics"]["gain_psnr"]["mean"] == pytest.approx(mean_gain)
    assert summary["baseline"]["gain"]["psnr"] == pytest.approx(mean_gain)

    page = (folder / "report.html").read_text()
    pictures = re.findall(r'<img class="px" src="data:image/png;base64,([^"]*)" width="256" alt="([^"]*)"', page)
    assert len(pictures) == 2 * 8  # report.samples = 2: degraded, bicubic, restored, ground truth, and the crops
    assert all(min(Image.open(io.BytesIO(base64.b64decode(data))).size) >= 256 for data, _ in pictures)
    assert re.findall(r'class="plot" src="data:image/[^"]*" width="\d+" alt="([^"]*)"', page) == [
        "psnr histogram",
        "ssim histogram",
        "shard timeline",
    ]
    assert "Best and worst images by PSNR gain over bicubic" in page and "Gain over bicubic" in page
    assert (folder / "report-card.html").read_text().count('class="plot"') == 2

    artifacts = _artifacts(state.state_details.flow_run_id)
    report = artifacts["pictured-sr2-report"].data
    assert "| baseline | baseline PSNR | PSNR gain (dB) | SSIM gain |" in report and "Gain over bicubic" in report
    assert len(re.findall(r"!\[[a-z ]+\]\(data:image/png;base64,", report)) == 2 * 4
    assert (
        f"- **report.html**: `{folder / 'report.html'}`\n" in report
        and report.count("browsers do not open file://") == 1
    )
    table = artifacts["pictured-sr2-shards"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert all(isinstance(entry["gain_psnr"], float) for entry in table)
    descriptions = [a.description for a in artifacts["progress"]]
    assert any(d.startswith("8/8 images (2/2 shards), ") and "images/s now" in d for d in descriptions), descriptions


def test_restore_mode_report_shows_the_baseline_with_both_consistencies(
    make_job, image_writer, tmp_path: Path
) -> None:
    folder = tmp_path / "masked"
    images = image_writer(folder, 3)
    mask = np.full((32, 32), 255, dtype=np.uint8)
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
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    report = _report_dir(state)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["metrics"]["baseline_measurement_rms"]["count"] == 3
    assert summary["metrics"]["baseline_measurement_rms"]["max"] < 1e-3  # biharmonic keeps the known pixels
    page = (report / "report.html").read_text()
    alts = re.findall(r'<img class="px" src="data:image/png;base64,[^"]*" width="256" alt="([^"]*)"', page)
    assert alts[:3] == ["degraded", "biharmonic", "restored"] and "ground truth" not in alts
    assert "(biharmonic 0.0000)" in page and "Measurement consistency ‖y − A(x)‖ RMS: restored" in page
    assert re.findall(r'alt="([a-z_]+) histogram"', page) == ["measurement_rms"]


def test_s3_report_links_are_presigned_and_open(make_job, images_8: Path, s3_bucket) -> None:
    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(images_8.glob("*.png"))[:4]:
        fs.pipe_file(f"{bucket}/faces/{path.name}", path.read_bytes())
    job = make_job(f"{bucket}/faces", f"{bucket}/jobs/linked", storage_options=options, name="linked")
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    report = _artifacts(state.state_details.flow_run_id)["linked-sr2-report"].data
    link = re.search(r"- \*\*report\.html\*\*: `(s3://[^`]+)` — \[open\]\((http[^)]+)\)\n", report)
    assert "Links are pre-signed and valid until " in report
    assert link and link.group(1).startswith(f"{bucket}/jobs/linked/"), report
    with urllib.request.urlopen(link.group(2), timeout=10) as response:
        assert response.read().startswith(b"<!DOCTYPE html>")


def test_a_shards_table_too_long_for_the_ui_keeps_every_failed_and_pending_shard() -> None:
    statuses = ["restored"] * 2500
    statuses[7], statuses[1800], statuses[2400] = "failed", "pending", "failed"
    table = [{"shard": f"32x32/{i:06d}", "status": status} for i, status in enumerate(statuses)]
    shown = shown_shards(table, limit=1000)
    assert len(shown) == 1000
    assert [row["shard"] for row in shown] == sorted(row["shard"] for row in shown)  # still in shard order
    assert {row["shard"] for row in shown if row["status"] != "restored"} == {
        "32x32/000007",
        "32x32/001800",
        "32x32/002400",
    }
    assert (
        shown[-1]["shard"] == "32x32/002400"
        and shown[-2]["shard"] == "32x32/001800"
        and shown[-3]["shard"] == "32x32/000997"
    )
    assert shown_shards(table[:1000], limit=1000) == table[:1000]
