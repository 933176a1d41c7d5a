"""The baseline in summaries and tables, the report's pictures and plots, the index page, and the UI pieces."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import urllib.request
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from diffpir_core.reporting import (
    Extremes,
    ReportFacts,
    ReportSample,
    ShardTiming,
    Throughput,
    build_summary,
    file_links,
    links_markdown,
    markdown_strip,
    markdown_table,
    pick_images,
    progress_line,
    render_html,
    render_index,
    verdict,
    write_report,
)
from diffpir_core.reporting.images import crop, crop_box, display_image

GAINS = [1.5, -0.5, 2.0, 0.25, math.inf, 0.75]


@pytest.fixture
def gain_rows() -> list[dict]:
    """Six SR images with the bicubic baseline's PSNR/SSIM and the gains (one identical image: inf)."""
    rows = []
    for i, gain in enumerate(GAINS):
        psnr = math.inf if math.isinf(gain) else 25.0 + i
        rows.append(
            {
                "id": f"img{i:03d}",
                "shard": f"32x32/{i // 3:06d}",
                "task": "sr2",
                "psnr": psnr,
                "ssim": 0.8,
                "baseline_psnr": 25.0 + i - (0 if math.isinf(gain) else gain),
                "gain_psnr": gain,
                "baseline_ssim": 0.7,
                "gain_ssim": 0.8 - 0.7,
                "seconds": 1.0,
            }
        )
    return rows


@pytest.fixture
def sr_info(info: ReportFacts) -> ReportFacts:
    return ReportFacts(
        **{
            **info.__dict__,
            "task": "sr x2, σ=0.05",
            "baseline": "bicubic",
            "unavailable": (),
            "failed": (),
            "quarantined": (),
        }
    )


def _sample(image_id: str, scores: dict, *, truth: bool = True, seed: int = 0) -> ReportSample:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    return ReportSample(image_id, images[0][::2, ::2], images[1], images[2] if truth else None, images[0], scores)


def _pictures(page: str) -> list[tuple[np.ndarray, int, str]]:
    found = re.findall(r'<img class="px" src="data:image/png;base64,([^"]*)" width="(\d+)" alt="([^"]*)"', page)
    return [
        (np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))), int(width), alt) for data, width, alt in found
    ]


def test_summary_csv_and_tables_carry_the_baseline_and_the_gain(tmp_path: Path, gain_rows, sr_info) -> None:
    files = write_report(str(tmp_path), gain_rows, sr_info)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["baseline"]["method"] == "bicubic" and summary["baseline"]["images"] == 6
    assert summary["baseline"]["better"] == {"psnr": 5, "ssim": 6}
    assert summary["metrics"]["gain_psnr"]["mean"] == "inf" and summary["metrics"]["gain_ssim"][
        "mean"
    ] == pytest.approx(0.1)
    parsed = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(parsed[0])[3:9] == ["psnr", "ssim", "baseline_psnr", "baseline_ssim", "gain_psnr", "gain_ssim"]
    for row in parsed:
        assert float(row["gain_psnr"]) == pytest.approx(float(row["psnr"]) - float(row["baseline_psnr"]))
    finite = [row for row in gain_rows if math.isfinite(row["gain_psnr"])]
    header, *_, line = markdown_table([build_summary(finite, sr_info)]).strip().splitlines()
    assert "| baseline | baseline PSNR | PSNR gain (dB) | SSIM gain |" in header
    assert "| bicubic | 26.40 | +0.80 | +0.1000 |" in line  # mean over the five finite images
    assert verdict(build_summary(finite, sr_info)) == (
        "Gain over bicubic: +0.80 dB PSNR, +0.1000 SSIM on average; the restoration has the higher PSNR on 4 of 5 "
        "images."
    )
    assert "Gain over bicubic" in (tmp_path / "report.md").read_text() and files.summary["baseline"]["images"] == 6


def test_report_shows_large_samples_crops_extremes_histograms_and_timeline(tmp_path: Path, gain_rows, sr_info) -> None:
    picks = pick_images(gain_rows, samples=2, extremes=2)
    assert (
        picks.samples == ["img000", "img005"]
        and picks.best == ["img002", "img000"]
        and picks.worst == ["img001", "img003"]
    )
    by_id = {row["id"]: row for row in gain_rows}
    shown = {image_id: _sample(image_id, by_id[image_id], seed=i) for i, image_id in enumerate(picks.ids())}
    timeline = [
        ShardTiming(f"32x32/{i:06d}", 1000.0 + 10 * i, {"prepare": 0.5, "sample": 8.0, "write": 0.5}) for i in range(3)
    ]
    write_report(
        str(tmp_path),
        gain_rows,
        sr_info,
        [shown[i] for i in picks.samples],
        extremes=Extremes(picks.metric, [shown[i] for i in picks.best], [shown[i] for i in picks.worst]),
        timeline=timeline,
    )
    page = (tmp_path / "report.html").read_text()
    pictures = _pictures(page)
    large = [(image, alt) for image, width, alt in pictures if width == 256]
    assert len(large) == 2 * 8 and all(min(image.shape[:2]) >= 256 for image, _ in large)
    assert [alt for _, alt in large[:8]] == [
        "degraded",
        "bicubic",
        "restored",
        "ground truth",
        "degraded, crop",
        "bicubic, crop",
        "restored, crop",
        "ground truth, crop",
    ]
    frames = [np.argwhere((image == (255, 214, 0)).all(axis=2)) for image, _ in large[:4]]
    assert all(len(frame) > 0 for frame in frames)
    corners = [(frame.min(axis=0).tolist(), frame.max(axis=0).tolist()) for frame in frames]
    assert (
        corners == [corners[2]] * 4
    )  # the crop is framed at the same place in every column, the SR measurement included
    first = shown["img000"]
    box = crop_box(first.restored, first.baseline, align=2)
    columns = {
        "degraded": first.degraded,
        "bicubic": first.baseline,
        "restored": first.restored,
        "ground truth": first.truth,
    }
    for column, image in columns.items():
        expected = display_image(crop(image, box, first.restored.shape), 256)
        np.testing.assert_array_equal(large[[alt for _, alt in large].index(f"{column}, crop")][0], expected)
    assert (
        box.size == 8 and box.left % 2 == 0 and box.top % 2 == 0
    )  # aligned to the SR scale: the same region at half size
    top, left = box.top // 2, box.left // 2
    np.testing.assert_array_equal(
        crop(first.degraded, box, first.restored.shape), first.degraded[top : top + 4, left : left + 4]
    )
    assert "PSNR 25.00 dB (bicubic 23.50, gain +1.50)" in page

    extremes = page[page.index("Best and worst images by PSNR gain over bicubic") : page.index("<h2>Distributions")]
    assert [extremes.index(i) for i in ("img002", "img000", "img001", "img003")] == sorted(
        extremes.index(i) for i in ("img002", "img000", "img001", "img003")
    )
    assert "<td>+2.00</td>" in extremes and "<td>−0.50</td>" in extremes
    assert sum(width == 128 for _, width, _ in pictures) == 4 * 3  # thumbnails: baseline, restored, ground truth

    plots = re.findall(
        r'<img class="plot" src="data:image/(svg\+xml|png);base64,([^"]*)" width="\d+" alt="([^"]*)"', page
    )
    assert [(kind, alt) for kind, _, alt in plots] == [
        ("svg+xml", "psnr histogram"),
        ("svg+xml", "ssim histogram"),
        ("png", "shard timeline"),
    ]
    svg = base64.b64decode(plots[0][1]).decode()
    assert "restored (mean 27.2)" in svg and "bicubic (mean 26.8)" in svg  # finite PSNRs only: 5 and 6 values
    assert "Infinite PSNRs (identical images) are left out" in page
    assert "first start to last finish 29.0 s" in page and "<td>sample</td><td>24.0 s</td><td>88.9 %</td>" in page

    card = (tmp_path / "report-card.html").read_text()
    assert card.startswith('<section class="card">') and len(_pictures(card)) == 2 * 8
    assert card.count('class="plot"') == 2 and "Gain over bicubic" in card


def test_restore_mode_report_shows_the_baseline_with_both_consistencies(sr_info) -> None:
    rows = [
        {
            "id": f"img{i}",
            "shard": "32x32/000000",
            "measurement_rms": 0.05 + 0.001 * i,
            "baseline_measurement_rms": 0.07,
            "seconds": 1.0,
        }
        for i in range(4)
    ]
    info = ReportFacts(**{**sr_info.__dict__, "mode": "restore", "fid": None})
    summary = build_summary(rows, info)
    samples = [_sample(row["id"], row, truth=False, seed=i) for i, row in enumerate(rows[:2])]
    page = render_html(summary, rows, samples)
    assert [alt for _, _, alt in _pictures(page)[:3]] == ["degraded", "bicubic", "restored"]
    assert "ground truth" not in page
    assert "‖y − A(x)‖ RMS 0.0500 (bicubic 0.0700)" in page
    assert "Measurement consistency ‖y − A(x)‖ RMS: restored 0.0515, bicubic 0.0700" in page
    assert re.findall(r'alt="([a-z_]+) histogram"', page) == ["measurement_rms"]
    header, *_, line = markdown_table([summary]).strip().splitlines()
    assert header.endswith("| baseline | baseline ‖y − A(x̃)‖ RMS | NFEs | wall time | images/s | images |")
    assert "| 0.0515 | bicubic | 0.0700 |" in line


def test_picks_spread_samples_and_skip_images_without_a_finite_gain(gain_rows) -> None:
    picks = pick_images(gain_rows, samples=3, extremes=10)
    assert picks.samples == ["img000", "img002", "img005"]
    assert picks.best == ["img002", "img000"] and "img004" not in picks.best + picks.worst  # infinite gain: unranked
    assert picks.worst == ["img001", "img003"] and picks.ids()[:3] == picks.samples
    no_gain = pick_images([{"id": "x", "measurement_rms": 0.1}], samples=8, extremes=4)
    assert no_gain.samples == ["x"] and no_gain.metric is None and not no_gain.best


def test_large_job_page_stays_small(tmp_path: Path, sr_info) -> None:
    rows = [
        {
            "id": f"img{i:05d}",
            "shard": f"32x32/{i // 16:06d}",
            "psnr": 20 + (i % 97) / 10,
            "baseline_psnr": 20.0,
            "gain_psnr": (i % 97) / 10,
            "ssim": 0.5,
            "baseline_ssim": 0.4,
            "gain_ssim": 0.1,
        }
        for i in range(10_000)
    ]
    write_report(str(tmp_path), rows, sr_info)
    page = (tmp_path / "report.html").read_text()
    assert len(page) < 300_000 and "The first 200 of 10000 images; metrics.csv beside this report has all." in page
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 10_001


def test_index_page_has_one_table_and_a_card_per_run(gain_rows, sr_info) -> None:
    summaries = [
        build_summary(gain_rows[:3], sr_info),
        build_summary(gain_rows[3:4], ReportFacts(**{**sr_info.__dict__, "task": "deblur"})),
    ]
    cards = [("sr/report.html", "<section>one</section>"), ("deblur/report.html", "<section>two</section>")]
    page = render_index("demo", "two runs <b>", summaries, cards)
    assert page.count("<tbody>") == 1 and page.count("| ") == 0 and "two runs &lt;b&gt;" in page
    assert (
        page.index("<section>one</section>")
        < page.index('href="sr/report.html"')
        < page.index("<section>two</section>")
    )


def test_ui_strip_embeds_small_images_with_the_gain(samples) -> None:
    strip = markdown_strip(samples, "bicubic")
    lines = strip.strip().splitlines()
    assert lines[0] == "| image | degraded | bicubic | restored | ground truth |" and len(lines) == 4
    assert lines[2].startswith("| `img000` +1.50 dB | ![degraded](data:image/png;base64,")
    images = re.findall(r"!\[[a-z ]+\]\(data:image/png;base64,([^)]*)\)", strip)
    assert len(images) == 8 and all(Image.open(io.BytesIO(base64.b64decode(i))).size == (128, 128) for i in images)
    assert markdown_strip([], "bicubic") == ""


def test_file_links_presign_s3_and_name_local_paths(tmp_path: Path, s3_options) -> None:
    fs = fsspec.filesystem("s3", **s3_options)
    fs.mkdir("links-bucket")
    fs.pipe_file("links-bucket/job/report.html", b"<html>report</html>")
    signed, local = file_links(
        {"report.html": "s3://links-bucket/job/report.html", "local": str(tmp_path / "r.html")}, s3_options
    )
    assert signed.https.startswith(s3_options["endpoint_url"]) and "Signature=" in signed.https
    with urllib.request.urlopen(signed.https, timeout=10) as response:  # the pre-signed link opens without credentials
        assert response.read() == b"<html>report</html>"
    text = links_markdown([signed, local, local])
    assert text.startswith(f"- **report.html**: `s3://links-bucket/job/report.html` — [open]({signed.https})\n")
    assert f"\n- **local**: `{tmp_path / 'r.html'}`\n" in text and local.https is None
    assert f"Links are pre-signed and valid until {signed.expires_at}." in text and text.count("file://") == 1
    (anonymous,) = file_links({"report.html": "s3://links-bucket/job/report.html"}, {**s3_options, "anon": True})
    assert anonymous.expires_at is None and "Signature" not in anonymous.https
    assert "they open only for public objects" in links_markdown([anonymous])


def test_progress_line_and_current_rate() -> None:
    now = [0.0]
    meter = Throughput(window=2, clock=lambda: now[0])
    assert meter.rate() is None and progress_line(0, 64, 0, 8, None) == "0/64 images (0/8 shards)"
    now[0] = 5.0
    meter.add(8)
    assert meter.rate() == pytest.approx(8 / 5)  # the first shard: since the meter started
    for t in (6.0, 8.0):
        now[0] = t
        meter.add(8)
    assert meter.rate() == pytest.approx(16 / 3)  # the last two shards, since the one before them finished
    now[0] = 11.0
    assert meter.rate() == pytest.approx(16 / 6)  # nothing finished since: the rate falls
    assert progress_line(48, 64, 6, 8, 1.6) == "48/64 images (6/8 shards), 1.60 images/s now"
