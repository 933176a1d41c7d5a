"""``report.html``: one self-contained page (images as inline PNG data URIs, inline CSS, no scripts)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
from PIL import Image

from diffpir_core.reporting.summary import Row
from diffpir_core.reporting.text import (
    DECIMALS,
    csv_columns,
    format_number,
    paper_table_rows,
    problem_line,
    to_json,
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.grid td, .grid th { text-align: center; vertical-align: top; }
.grid img { image-rendering: pixelated; display: block; }
.problem { color: #a00; }
pre { background: #f6f6f6; padding: 1em; }
"""


@dataclass(frozen=True)
class ReportSample:
    """One image of the grid: uint8 (H, W, 3) arrays; ``degraded`` may be smaller (SR), ``truth`` absent."""

    id: str
    degraded: np.ndarray
    restored: np.ndarray
    truth: np.ndarray | None = None


def png_data_uri(image_u8: np.ndarray) -> str:
    """A ``data:image/png;base64,…`` URI of a uint8 (H, W, 3) or (H, W) image."""
    array = np.asarray(image_u8)
    if array.dtype != np.uint8:
        raise TypeError(f"images for the report must be uint8, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(
    summary: Mapping[str, Any], rows: Sequence[Row], samples: Sequence[ReportSample] = ()
) -> str:
    """The whole report page: facts, the paper table, image grid, per-image table, problems, config."""
    header, lines = paper_table_rows([summary])
    body = [
        f"<h1>DiffPIR restoration report: {escape(str(summary['task']))}</h1>",
        "<ul>",
        f"<li>dataset: <code>{escape(str(summary['dataset']))}</code></li>",
        f"<li>prior: <code>{escape(str(summary['prior']))}</code></li>",
        f"<li>mode: {escape(str(summary['mode']))}; images scored: {summary['images']}; "
        f"generated {escape(str(summary['generated_at']))}</li>",
        "</ul>",
        "<h2>Results</h2>",
        _table(header, lines),
    ]
    body += _problems(summary)
    if samples:
        body += ["<h2>Samples</h2>", _grid(samples)]
    body += ["<h2>Per-image metrics</h2>", _csv_table(rows)]
    body += ["<h2>Configuration</h2>", f"<pre>{escape(to_json(summary['config']))}</pre>"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>DiffPIR report: {escape(str(summary['task']))}</title><style>{_CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>" for cells in lines
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _csv_table(rows: Sequence[Row]) -> str:
    """Per-image table with the same columns as metrics.csv, numbers rounded for reading."""
    if not rows:
        return "<p>No images were scored.</p>"
    columns = csv_columns(rows)
    return _table(columns, [[_cell(row.get(column), column) for column in columns] for row in rows])


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return format_number(float(value), DECIMALS.get(column, 3))
    return str(value)


def _grid(samples: Sequence[ReportSample]) -> str:
    with_truth = any(sample.truth is not None for sample in samples)
    titles = ["image", "degraded", "restored"] + (["ground truth"] if with_truth else [])
    lines = []
    for sample in samples:
        width = sample.restored.shape[1]
        images = [sample.degraded, sample.restored] + ([sample.truth] if with_truth else [])
        cells = [f"<td>{escape(sample.id)}</td>"]
        for image in images:
            if image is None:
                cells.append("<td>—</td>")
            else:
                cells.append(f'<td><img src="{png_data_uri(image)}" width="{width}" alt=""></td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{title}</th>" for title in titles)
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'


def _problems(summary: Mapping[str, Any]) -> list[str]:
    parts: list[str] = []
    if summary["unavailable"]:
        parts.append("<h2>Unavailable metrics</h2><ul>")
        parts += [f"<li>{escape(message)}</li>" for message in summary["unavailable"].values()]
        parts.append("</ul>")
    for title, key in (("Failed", "failed"), ("Quarantined", "quarantined")):
        if summary[key]:
            parts.append(f'<h2 class="problem">{title}</h2><ul>')
            parts += [f"<li>{escape(problem_line(item))}</li>" for item in summary[key]]
            parts.append("</ul>")
    return parts
