"""How a job's posterior samples are shown: the report's uncertainty section (coverage sentence and table, per image
degraded | estimate | std heatmap | |error| heatmap on one colour scale, the error-vs-std plot) and what
``diffpir export --what std|samples`` writes. The numbers come from :mod:`diffpir_core.runs.uncertainty`."""

import json
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import yaml

from diffpir_core.io import ShardRef
from diffpir_core.io.decode import encode_png
from diffpir_core.io.uris import filesystem, join, put_atomic
from diffpir_core.reporting import ReportSample, ReportSection, png_data_uri
from diffpir_core.reporting.uncertainty import (
    colour_bar_rgb,
    coverage_table_markdown,
    error_vs_std_png,
    heatmap_rgb,
    shared_vmax,
    uncertainty_caption,
    uncertainty_row,
)
from diffpir_core.runs.done import STD_ARRAY, job_identities, sample_array, sample_identity
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, job_folder, read_text
from diffpir_core.runs.uncertainty import (
    CALIBRATION_FILE,
    UNCALIBRATED,
    ImageMaps,
    coverage,
    coverage_sentence,
    image_maps,
    in_calibration,
)
from diffpir_core.uncertainty.calibration import load_calibration

EXPORT_VMAX = {"std": 0.1, "half-width": 0.5}
"""The top of the heatmap colour scale of ``diffpir export --what std`` on the [0, 1] pixel scale, by quantity: one
fixed scale, so that the PNGs of one job (and of several jobs) compare."""
SCALE_FILE = "colour-scale.json"


@dataclass
class ExportPart:
    """One array a ``diffpir export --what`` writes: into ``folder`` of the destination ("" = itself), only the shards
    whose record for ``identities`` exists, each image through ``render`` (None: as stored), names ending in
    ``suffix`` + ``.png``; ``legend``: what the pictures show (written beside them as :data:`SCALE_FILE`)."""

    array: str
    folder: str
    identities: dict[str, dict[str, str]]
    render: Callable[[np.ndarray], np.ndarray] | None = None
    suffix: str = ""
    legend: dict[str, Any] | None = None


def job_scale(plan: JobPlan, storage_options: dict[str, Any]) -> float | None:
    """The calibrated scale q̂ of a job's maps: evaluate mode's fitted ``calibration.json``, restore mode's
    ``uncertainty.calibration`` file; None when the job has none (its maps are uncalibrated)."""
    fitted = read_text(plan.job_dir, CALIBRATION_FILE, storage_options)
    if fitted is not None:
        return load_calibration(join(plan.job_dir, CALIBRATION_FILE), storage_options).scale
    data = yaml.safe_load(read_text(plan.output, f"{job_folder(plan.job_hash)}/job.yaml", storage_options) or "")
    path = ((data or {}).get("uncertainty") or {}).get("calibration")
    return None if path is None else load_calibration(path, storage_options).scale


def export_parts(plan: JobPlan, what: str, storage_options: dict[str, Any]) -> list[ExportPart]:
    """What ``diffpir export --what WHAT`` writes of a job: ``restored`` its restored images (the estimate of a job
    with posterior samples); ``samples`` each sample k into ``sample-<k>/``; ``std`` a heatmap per image of the mean
    std over the colour channels (``<id>.std-uncalibrated.png``), or with a calibration of the band's half-width
    q̂·std (``<id>.half-width-calibrated.png``), on the fixed scale :data:`EXPORT_VMAX`."""
    identities = job_identities(plan, storage_options)
    if what == "restored":
        return [ExportPart(plan.restored_array, "", identities)]
    if plan.uncertainty is None:
        raise ValueError(
            f"--what {what}: job {plan.job_hash[:16]} ({plan.title}) has no posterior samples (no `uncertainty` in "
            "its job file); export its restored images (--what restored) or run it with uncertainty: {samples: K}"
        )
    if what == "samples":
        return [
            ExportPart(sample_array(k), f"sample-{k}", {key: sample_identity(i, k) for key, i in identities.items()})
            for k in range(plan.samples)
        ]
    scale = job_scale(plan, storage_options)
    quantity, label = ("std", UNCALIBRATED) if scale is None else ("half-width", "calibrated")
    vmax = EXPORT_VMAX[quantity]

    def render(std: np.ndarray) -> np.ndarray:
        return heatmap_rgb(_shown_map(ImageMaps(np.asarray(std, np.float32), None), scale), vmax)

    legend = {
        "shows": "per-pixel std of the posterior samples (mean over the colour channels), [0, 1] pixel scale"
        if scale is None
        else "half-width q̂·std of the calibrated band estimate ± q̂·std (mean over the colour channels)",
        "label": label,
        "scale": scale,
        "vmin": 0.0,
        "vmax": vmax,
        "samples": plan.samples,
    }
    return [ExportPart(STD_ARRAY, "", identities, render, f".{quantity}-{label}", legend)]


def write_legend(out_uri: str, legend: dict[str, Any], storage_options: dict[str, Any] | None) -> None:
    """:data:`SCALE_FILE` and ``colour-bar.png`` (the heatmaps' colour scale) into ``out_uri``."""
    fs, root = filesystem(out_uri, storage_options)
    fs.makedirs(root, exist_ok=True)
    put_atomic(fs, join(root, SCALE_FILE), (json.dumps(legend, indent=1) + "\n").encode())
    bar = colour_bar_rgb(legend["vmax"], 160, "half-width" if legend["scale"] is not None else "std")
    put_atomic(fs, join(root, "colour-bar.png"), encode_png(bar))


def _shown_map(maps: ImageMaps, scale: float | None) -> np.ndarray:
    """The (H, W) map a report or export shows: the std, or with a calibration the half-width q̂·std, averaged over
    the colour channels."""
    return maps.std.mean(axis=-1) * (1.0 if scale is None else scale)


def uncertainty_section(job: Job, plan: JobPlan, done: list[ShardRef], samples: list[ReportSample]) -> ReportSection:
    """The report's uncertainty: ``coverage`` in summary.json (:func:`coverage`), the sentence, the coverage table,
    per sample image degraded | estimate | std (or calibrated half-width) heatmap | |error| heatmap (evaluate mode) on
    one colour scale with its bar, and the error-vs-std plot of the test images (evaluate mode, calibrated)."""
    maps = image_maps(job, plan, done) if job.mode == "evaluate" else None
    entry = coverage(job, plan, done, maps)
    scale = entry.get("scale") if entry.get("calibrated") else None
    caption = uncertainty_caption(scale, entry["alpha"], entry["delta"])  # the calibration file's in restore mode
    label = "half-width q̂·std" if scale is not None else f"std, {UNCALIBRATED}"
    shown_ids = {sample.id for sample in samples}
    pictured_maps = image_maps(job, plan, done, shown_ids) if maps is None else maps
    pictured = [(sample, pictured_maps[sample.id]) for sample in samples if sample.id in pictured_maps]
    shown = [_shown_map(m, scale) for _, m in pictured]
    errors = [None if m.abs_error is None else m.abs_error.mean(axis=-1) for _, m in pictured]
    vmax = shared_vmax(shown + [e for e in errors if e is not None])
    sentence = coverage_sentence(entry)
    html = [f"<h2>Uncertainty: {escape(label)}</h2>", f"<p>{escape(sentence)}</p>", f"<p>{escape(caption)}</p>"]
    markdown = f"## Uncertainty: {label}\n\n{sentence}\n\nMaps: {caption}.\n"
    if "image_coverage" in entry:
        table = coverage_table_markdown(entry)
        markdown += f"\n{table}"
        html.append(_html_table(table))
    if pictured:
        columns = "degraded | estimate | " + label + (" | |error|" if errors[0] is not None else "")
        html.append(f"<p>{escape(columns)}, one colour scale (0 to {vmax:.3f}, [0, 1] pixel scale):</p>")
        for (sample, _), std, error in zip(pictured, shown, errors, strict=True):
            row = uncertainty_row(sample.degraded, sample.restored, std, error, vmax, label=label.split(",")[0])
            html.append(f'<figure><img alt="{escape(sample.id)}" src="{png_data_uri(row)}">')
            html.append(f"<figcaption>{escape(sample.id)}</figcaption></figure>")
    if maps is not None and scale is not None:
        tests = [m for image_id, m in maps.items() if not in_calibration(job, image_id)]
        if tests:
            plot = error_vs_std_png([m.std for m in tests], [m.abs_error for m in tests], scale)
            html.append(f'<img alt="error against std" src="data:image/png;base64,{b64encode(plot).decode()}">')
    return ReportSection("coverage", entry, markdown, html)


def _html_table(markdown: str) -> str:
    """A markdown table (header, rule, rows) as an HTML table."""
    lines = [
        [cell.strip().replace("\\|", "|") for cell in line.strip("|").split(" | ")] for line in markdown.splitlines()
    ]
    head = "".join(f"<th>{escape(cell)}</th>" for cell in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in lines[2:])
    return f"<table><tr>{head}</tr>{body}</table>"
