"""Report files: written, parseable, holding the numbers; HTML self-contained."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from diffpir_core.metrics import MetricUnavailable
from diffpir_core.reporting import (
    REPORT_FILES,
    ReportFacts,
    build_summary,
    markdown_table,
    metrics_csv,
    png_data_uri,
    render_html,
    write_report,
)


def test_summary_aggregates_rows_and_run_facts(rows, info) -> None:
    summary = build_summary(rows, info)
    assert summary["images"] == 4 and summary["images_per_second"] == pytest.approx(0.5)
    assert list(summary["metrics"]) == ["psnr", "ssim", "lpips"]  # "seconds" is not a metric
    psnr = summary["metrics"]["psnr"]
    assert psnr["mean"] == pytest.approx(26.71875) and psnr["min"] == 24.0 and psnr["max"] == 30.125
    assert psnr["std"] == pytest.approx(np.std([27.25, 25.5, 30.125, 24.0]))
    assert summary["metrics"]["lpips"] == {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    assert summary["fid"] == pytest.approx(59.654321)
    assert summary["unavailable"] == {"lpips": info.unavailable[0].message}
    no_reason = build_summary(rows, ReportFacts(**{**info.__dict__, "unavailable": ()}))
    assert no_reason["unavailable"] == {"lpips": "lpips: no image has a value (the scoring step recorded none)"}
    missing_fid = ReportFacts(**{**info.__dict__, "fid": MetricUnavailable("FID", "too few", "more")})
    assert build_summary(rows, missing_fid)["unavailable"]["fid"] == "FID unavailable: too few. Fix: more"


def test_markdown_table_has_the_paper_shape(rows, info) -> None:
    table = markdown_table([build_summary(rows, info)])
    lines = table.strip().splitlines()
    assert lines[0].split(" | ")[:5] == ["| task", "PSNR ↑ (dB)", "SSIM ↑", "LPIPS ↓", "FID ↓"]
    assert "NFEs" in lines[0] and "wall time" in lines[0] and "images/s" in lines[0]
    cells = [cell.strip() for cell in lines[2].strip("|").split(" | ")]
    assert cells == ["sr x4 \\| sigma 0.05", "26.72", "0.7500", "n/a", "59.65", "100", "8.0 s", "0.500", "4"]


def test_restore_mode_table_shows_measurement_consistency(info) -> None:
    rows = [{"id": f"img{i}", "measurement_rms": 0.05 + 0.01 * i, "seconds": 1.0} for i in range(3)]
    summary = build_summary(rows, ReportFacts(**{**info.__dict__, "mode": "restore", "fid": None}))
    header, *_, line = markdown_table([summary]).strip().splitlines()
    assert "‖y − A(x̂)‖ RMS" in header and "| 0.0600 |" in line
    assert "| n/a | n/a | n/a | n/a | 0.0600 | 100 |" in line


def test_metrics_csv_round_trips_every_value(rows) -> None:
    rows[1]["psnr"] = math.inf
    rows[2]["note"] = "re-run"
    parsed = list(csv.DictReader(io.StringIO(metrics_csv(rows))))
    assert list(parsed[0]) == ["id", "shard", "task", "psnr", "ssim", "lpips", "seconds", "note"]
    assert [float(row["psnr"]) for row in parsed] == [27.25, math.inf, 30.125, 24.0]
    assert parsed[0]["lpips"] == "" and parsed[2]["note"] == "re-run" and parsed[0]["note"] == ""
    assert parsed[3]["shard"] == "shard-00001" and float(parsed[3]["seconds"]) == 4.5


def test_metrics_csv_escapes_formula_text_but_not_numbers(rows) -> None:
    formulas = ['=HYPERLINK("http://x","y").png', "+1.png", "-2.png", "@SUM(A1).png"]
    for row, image_id in zip(rows, formulas, strict=True):
        row["id"] = image_id
    rows[0]["psnr"], rows[1]["ssim"], rows[2]["psnr"] = -1.5, np.float32(-0.25), -math.inf
    rows[3]["note"] = "-5"  # text that looks like a number is still text: escaped
    parsed = list(csv.DictReader(io.StringIO(metrics_csv(rows))))
    assert [row["id"] for row in parsed] == ["'" + image_id for image_id in formulas]
    assert (parsed[0]["psnr"], parsed[1]["ssim"], parsed[2]["psnr"]) == ("-1.5", "-0.25", "-inf")
    assert parsed[3]["note"] == "'-5" and parsed[1]["task"] == "sr_x4"


def test_write_report_writes_four_parseable_files(tmp_path: Path, rows, info, samples) -> None:
    rows[0]["psnr"] = np.float64(math.inf)  # numpy scalars and infinities serialise too
    files = write_report(str(tmp_path / "out" / "report"), rows, info, samples)
    folder = tmp_path / "out" / "report"
    assert sorted(path.name for path in folder.iterdir()) == sorted(REPORT_FILES)
    assert files.uris["report.md"] == str(folder / "report.md")
    assert (
        "<html" not in (folder / "report-card.html").read_text()
        and "img000" in (folder / "report-card.html").read_text()
    )
    summary = json.loads((folder / "summary.json").read_text(), parse_constant=_reject_constant)
    assert summary["metrics"]["psnr"]["max"] == "inf" and summary["metrics"]["psnr"]["mean"] == "inf"
    assert summary["metrics"]["ssim"]["mean"] == pytest.approx(0.75)
    assert summary["config"]["sampler"]["lambda_"] == 7.0 and summary["failed"][0]["attempts"] == 3
    report = (folder / "report.md").read_text()
    assert "| sr x4 \\| sigma 0.05 | inf | 0.7500 | n/a | 59.65 | 100 |" in report
    assert "- shard-00007 (attempts 3): CUDA out of memory <b>" in report
    assert "- broken.png (stage ingest): not a PNG file" in report
    assert "LPIPS unavailable: cannot import torchvision. Fix: pip install x" in report
    assert len(list(csv.DictReader((folder / "metrics.csv").open()))) == 4


def test_html_is_self_contained_and_shows_the_grid(rows, info, samples) -> None:
    page = render_html(build_summary(rows, info), rows, samples)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    sources = re.findall(r'src="([^"]*)"', page)
    assert all(source.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for source in sources)
    assert all(link.startswith("#") for link in re.findall(r'href="([^"]*)"', page))  # zoom anchors only
    assert not re.search(r"https?://", page.replace("s3://bucket/faces", "").replace("http://www.w3.org", ""))
    assert "<script" not in page and "<link" not in page
    pictures = re.findall(r'<img class="px" src="data:image/png;base64,([^"]*)" width="(\d+)" alt="([^"]*)"', page)
    assert len(pictures) == 2 * 8  # per sample: degraded, baseline, restored, ground truth, and their crops
    restored = [data for data, _, alt in pictures if alt == "restored"][0]
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(restored))))
    assert decoded.shape == (256, 256, 3)  # 32 px enlarged x8 by whole pixels
    frame = (decoded == (255, 214, 0)).all(axis=2)
    np.testing.assert_array_equal(decoded[::8, ::8][~frame[::8, ::8]], samples[0].restored[~frame[::8, ::8]])
    assert "CUDA out of memory &lt;b&gt;" in page  # escaped, not markup
    assert "<td>26.72</td>" in page and "<td>59.65</td>" in page and "<td>30.12</td>" in page


def test_html_without_ground_truth_or_samples(rows, info, samples) -> None:
    restore_only = [type(s)(s.id, s.degraded, s.restored) for s in samples]
    page = render_html(build_summary(rows, info), rows, restore_only)
    assert "ground truth" not in page and page.count("data:image/png") == 2 * 4  # degraded, restored + crops
    assert page.count("no baseline for this image") == 2 * 2
    assert "Samples" not in render_html(build_summary(rows, info), rows)
    with pytest.raises(TypeError, match="uint8"):
        png_data_uri(np.zeros((4, 4, 3), np.float32))


def test_a_run_where_everything_failed_still_reports(tmp_path: Path, info) -> None:
    files = write_report(str(tmp_path), [], info)
    assert files.summary["images"] == 0 and files.summary["metrics"] == {}
    assert (tmp_path / "metrics.csv").read_text() == "id,shard,task\n"
    assert "No images were scored." in (tmp_path / "report.html").read_text()
    assert "| sr x4 \\| sigma 0.05 | n/a | n/a | n/a | 59.65 | 100 |" in (tmp_path / "report.md").read_text()


def test_write_report_to_s3(s3_options, rows, info, samples) -> None:
    fs = fsspec.filesystem("s3", **s3_options)
    fs.mkdir("reports-bucket")
    files = write_report("s3://reports-bucket/jobs/faces-sr4", rows, info, samples, storage_options=s3_options)
    assert files.uris["summary.json"] == "s3://reports-bucket/jobs/faces-sr4/summary.json"
    assert sorted(fs.ls("reports-bucket/jobs/faces-sr4", detail=False)) == sorted(
        f"reports-bucket/jobs/faces-sr4/{name}" for name in REPORT_FILES
    )
    summary = json.loads(fs.cat_file("reports-bucket/jobs/faces-sr4/summary.json"))
    assert summary["metrics"]["psnr"]["mean"] == pytest.approx(26.71875) and summary["images"] == 4


def _reject_constant(name: str) -> float:
    raise AssertionError(f"summary.json holds the non-standard JSON constant {name}")
