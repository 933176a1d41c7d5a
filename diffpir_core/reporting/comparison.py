"""The comparison report of a job with variants: the paper's table (variant × task: method, settings, NFEs,
PSNR, SSIM, LPIPS, FID, seconds per image), PSNR-against-setting plots for grids, and a sample grid with one
column per variant (no Prefect here).

Costs are what ran: ``nfes`` is the network forward calls per image of the variant's config, ``backward``
the backward passes through the network (DPS differentiates every call: about twice a forward's time and
the memory of a training step at the batch size); ``s/image`` is the sampler's seconds per image from the
shard records, so a re-run that restores nothing still shows what the restoration cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import fsspec
import numpy as np

from diffpir_core.reporting.html import _CSS, _figure
from diffpir_core.reporting.plots import sweep_uri
from diffpir_core.reporting.summary import Row
from diffpir_core.reporting.text import _md_escape, format_number, method_caveat, metrics_csv, setting_label, to_json

COLUMNS = (
    "task",
    "variant",
    "method",
    "settings",
    "NFEs",
    "backward",
    "PSNR",
    "SSIM",
    "LPIPS",
    "FID",
    "degraded PSNR",
    "baseline PSNR",
    "s/image",
    "images",
)
COMPARISON_FILES = ("report.md", "report.html", "summary.json", "metrics.csv")
MEMORY_NOTE = (
    "DPS differentiates every network call (one backward pass per step): its memory is that of a training step at the "
    "batch size, several times a sampling step's, and each step costs about three forward passes."
)


@dataclass(frozen=True)
class ComparisonEntry:
    """One variant on one task: its summary (``reporting.build_summary``), per-image rows and cost, or why n/a."""

    variant: str
    task: str
    method: str
    settings: Mapping[str, Any]
    swept: Mapping[str, Any]
    summary: Mapping[str, Any] | None = None
    rows: Sequence[Row] = ()
    backward_passes: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class SampleRow:
    """One image of a task shown across the variants: degraded, each variant's restoration (None: n/a), truth."""

    task: str
    image_id: str
    degraded: np.ndarray
    restored: Mapping[str, np.ndarray | None]
    truth: np.ndarray | None = None
    scores: Mapping[str, float | None] = field(default_factory=dict)


def _mean(summary: Mapping[str, Any] | None, metric: str) -> float | None:
    if summary is None:
        return None
    return (summary.get("metrics", {}).get(metric) or {}).get("mean")


def _seconds(rows: Sequence[Row]) -> float | None:
    values = [row["seconds"] for row in rows if row.get("seconds") is not None]
    return float(np.mean(values)) if values else None


def table_rows(
    entries: Sequence[ComparisonEntry], degraded: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """One plain row per entry (summary.json's ``table``): numbers, None where missing or n/a; ``degraded``: per task
    the mean PSNR of the degraded inputs (``scoring.degraded_psnr``), and ``beats_degraded`` whether PSNR is
    above it."""
    degraded = degraded or {}
    table = []
    for entry in entries:
        summary = entry.summary
        fid = summary.get("fid") if summary else None
        table.append(
            {
                "task": entry.task,
                "variant": entry.variant,
                "method": entry.method,
                "settings": dict(entry.settings),
                "swept": dict(entry.swept),
                "nfes": summary.get("nfes") if summary else None,
                "backward_passes": entry.backward_passes if summary else None,
                "psnr": _mean(summary, "psnr"),
                "ssim": _mean(summary, "ssim"),
                "lpips": _mean(summary, "lpips"),
                "fid": fid if isinstance(fid, (int, float)) else None,
                "degraded_psnr": degraded.get(entry.task),
                "baseline_psnr": _mean(summary, "baseline_psnr"),
                "seconds_per_image": _seconds(entry.rows),
                "images": summary.get("images") if summary else 0,
                "status": "n/a" if entry.reason else ("done" if summary and summary.get("images") else "not scored"),
                "reason": entry.reason,
            }
        )
        row = table[-1]
        row["beats_degraded"] = (
            None if None in (row["psnr"], row["degraded_psnr"]) else row["psnr"] > row["degraded_psnr"]
        )
    return table


BEST_MARK = " ★"
"""Appended to the best value of a metric among a task's variants (higher PSNR/SSIM, lower LPIPS/FID)."""
_BEST = {"psnr": max, "ssim": max, "lpips": min, "fid": min}


def _best(rows: Sequence[Mapping[str, Any]]) -> set[tuple[int, str]]:
    """(row index, metric) of each task's best value of each metric, when the task has more than one value."""
    marked = set()
    for task in dict.fromkeys(row["task"] for row in rows):
        for metric, pick in _BEST.items():
            scored = [
                (i, row[metric]) for i, row in enumerate(rows) if row["task"] == task and row.get(metric) is not None
            ]
            if len(scored) > 1:
                best = pick(value for _, value in scored)
                marked |= {(i, metric) for i, value in scored if value == best}
    return marked


def _cells(row: Mapping[str, Any], best: set[str] = frozenset()) -> list[str]:
    settings = ", ".join(f"{setting_label(k)}={v}" for k, v in row["settings"].items()) or "method defaults"
    if row["status"] == "n/a":
        return [row["task"], row["variant"], row["method"], settings, *(["n/a"] * (len(COLUMNS) - 4))]

    def number(value: Any, decimals: int, metric: str = "") -> str:
        return "n/a" if value is None else format_number(value, decimals) + (BEST_MARK if metric in best else "")

    return [
        row["task"],
        row["variant"],
        row["method"],
        settings,
        number(row["nfes"], 0),
        number(row["backward_passes"], 0),
        number(row["psnr"], 2, "psnr"),
        number(row["ssim"], 4, "ssim"),
        number(row["lpips"], 4, "lpips"),
        number(row["fid"], 2, "fid"),
        number(row["degraded_psnr"], 2),
        number(row["baseline_psnr"], 2),
        number(row["seconds_per_image"], 2),
        str(row["images"]),
    ]


def _table_cells(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    marked = _best(rows)
    return [_cells(row, {metric for index, metric in marked if index == i}) for i, row in enumerate(rows)]


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as GitHub markdown (also the Prefect UI artifact's); ★ marks each task's best value per metric."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md_escape(cell) for cell in cells) + " |" for cells in _table_cells(rows)]
    return "\n".join(lines) + "\n"


def _notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = [f"{row['variant']} on {row['task']}: n/a — {row['reason']}" for row in rows if row["status"] == "n/a"]
    notes += [
        f"{row['variant']} on {row['task']}: {caveat}"
        for row in rows
        if row["status"] != "n/a" and (caveat := method_caveat(row["method"], row["task"]))
    ]
    if any(row["backward_passes"] for row in rows):
        notes.append(MEMORY_NOTE)
    return notes


def sweeps(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Per task, (parameter, SVG data URI) of PSNR against each swept parameter with more than one value."""
    plots: dict[str, list[tuple[str, str]]] = {}
    for task in dict.fromkeys(row["task"] for row in rows):
        swept = [row for row in rows if row["task"] == task and row["swept"]]
        parameters = [
            name
            for name in dict.fromkeys(k for row in swept for k in row["swept"])
            if len({str(row["swept"].get(name)) for row in swept}) > 1
        ]
        points = [{**row["swept"], "psnr": row["psnr"]} for row in swept]
        plots[task] = [
            (name, sweep_uri(points, name, title=f"{task}: PSNR against {setting_label(name)}")) for name in parameters
        ]
    return {task: found for task, found in plots.items() if found}


def comparison_html(title: str, intro: str, rows: Sequence[Mapping[str, Any]], samples: Sequence[SampleRow]) -> str:
    """The self-contained page: table, notes, sweep plots, sample grid (one column per variant)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body_rows = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>" for cells in _table_cells(rows)
    )
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(intro)}</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>",
    ]
    body += [f'<p class="note">{escape(note)}</p>' for note in _notes(rows)]
    for task, plots in sweeps(rows).items():
        body.append(f"<h2>Sweep: {escape(task)}</h2>")
        body += [f'<img src="{uri}" alt="PSNR against {escape(setting_label(name))}">' for name, uri in plots]
    for task in dict.fromkeys(sample.task for sample in samples):
        body.append(f"<h2>Samples: {escape(task)}</h2>")
        for sample in (s for s in samples if s.task == task):
            side = 192
            figures = [_figure(sample.degraded, "degraded", side)]
            for variant, image in sample.restored.items():
                score = sample.scores.get(variant)
                label = (
                    f"{variant} (n/a)"
                    if image is None
                    else f"{variant}" + ("" if score is None else f" {score:.2f} dB")
                )
                figures.append(
                    _figure(image, label, side)
                    if image is not None
                    else f'<figure><div class="missing">n/a</div><figcaption>{escape(label)}</figcaption></figure>'
                )
            if sample.truth is not None:
                figures.append(_figure(sample.truth, "ground truth", side))
            body.append(
                f'<div class="sample"><h3>{escape(sample.image_id)}</h3>'
                f'<div class="cols">{"".join(figures)}</div></div>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_comparison(
    output_uri: str,
    title: str,
    intro: str,
    entries: Sequence[ComparisonEntry],
    degraded: Mapping[str, float] | None = None,
    samples: Sequence[SampleRow] = (),
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Write report.md, report.html, summary.json (the table) and metrics.csv (every image of every variant, with a
    ``variant`` column) into the folder ``output_uri``; returns their URIs and the table rows."""
    rows = table_rows(entries, degraded)
    notes = _notes(rows)
    markdown = f"# {title}\n\n{intro}\n\n{comparison_markdown(rows)}\n" + "".join(
        f"- {_md_escape(n)}\n" for n in notes
    )
    images = [{"variant": e.variant, **row} for e in entries for row in e.rows]
    contents = {
        "report.md": markdown,
        "report.html": comparison_html(title, intro, rows, samples),
        "summary.json": to_json({"title": title, "table": rows, "notes": notes}) + "\n",
        "metrics.csv": metrics_csv(images),
    }
    fs, root = fsspec.core.url_to_fs(output_uri, **dict(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    uris = {}
    for name, text in contents.items():
        fs.pipe_file(f"{root.rstrip('/')}/{name}", text.encode("utf-8"))
        uris[name] = f"{output_uri.rstrip('/')}/{name}"
    return uris, rows
