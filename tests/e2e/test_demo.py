"""The demo job end to end through the CLI: held-out images in, three restore flows, reports out."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from diffpir_core.models.presets import get_preset
from diffpir_core.runs.job import load_job
from diffpir_flow.cli.demo import DEMO_TASKS, demo_job

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not get_preset("demo").path().is_file(), reason="the shipped demo prior (diffpir_core/models/weights) is missing"
)


@pytest.mark.slow
def test_short_demo_runs_the_restore_flow_for_every_task(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # the demo's own temporary server: no PREFECT_API_URL at all (set but empty, Prefect's events client fails)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from diffpir_flow.cli.app import main; main()",
            "demo",
            "--out",
            str(out),
            "--iter-num",
            "3",
            "--images",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr  # the temporary server is stopped once it recorded everything

    inputs = sorted((out / "input").glob("*.png"))
    assert [p.stem for p in inputs] == ["astronaut_0", "astronaut_1"]
    assert all(Image.open(p).size == (64, 64) for p in inputs)
    index = (out / "report.html").read_text()
    for label in DEMO_TASKS:
        (job_dir,) = (out / label / "jobs").iterdir()  # each task's job folder in its output
        summary = json.loads((job_dir / "summary.json").read_text())
        assert summary["images"] == 2 and summary["mode"] == "evaluate" and summary["prior"] == "demo"
        assert summary["nfes"] == 3
        psnr = summary["metrics"]["psnr"]
        assert psnr["count"] == 2 and math.isfinite(psnr["mean"]) and psnr["mean"] > 5.0
        assert (job_dir / "report.html").is_file()
        assert f"{label}/jobs/{job_dir.name}/report.html" in index
        gain = summary["metrics"]["gain_psnr"]["mean"]
        assert gain == pytest.approx(psnr["mean"] - summary["metrics"]["baseline_psnr"]["mean"])

    assert "<th>baseline</th><th>baseline PSNR</th><th>PSNR gain (dB)</th>" in index.split("</thead>")[0]
    cards = index.split('<section class="card">')[1:]
    assert len(cards) == len(DEMO_TASKS)
    for card, baseline in zip(cards, ("bicubic", "wiener", "biharmonic"), strict=True):
        alts = re.findall(r'<img class="px" src="data:image/png;base64,[^"]*" width="256" alt="([^"]*)"', card)
        columns = ["degraded", baseline, "restored", "ground truth"]
        assert alts == (columns + [f"{column}, crop" for column in columns]) * 2  # two large samples with their crops
        assert re.findall(r'alt="([a-z]+) histogram"', card) == ["psnr", "ssim"] and f"Gain over {baseline}" in card


def test_jobs_demo_yaml_is_the_demo_sr_job() -> None:
    from_file = load_job(REPO / "jobs" / "demo.yaml")
    from_code = demo_job(REPO / "runs" / "demo", "sr4")
    assert from_file.model_dump() == from_code.model_dump()


def test_demo_tasks_are_valid_jobs(tmp_path: Path) -> None:
    kinds = {label: demo_job(tmp_path, label).task.kind for label in DEMO_TASKS}
    assert kinds == {"sr4": "sr", "deblur": "deblur", "inpaint": "inpaint"}
    assert demo_job(tmp_path, "deblur").task.noise_sigma == 0.05
    assert demo_job(tmp_path, "inpaint", iter_num=7).sampler_config().iter_num == 7
