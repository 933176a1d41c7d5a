"""Run reports from plain data: per-image rows, run facts and a few sample images (no Prefect here).

:func:`write_report` writes ``metrics.csv``, ``summary.json``, ``report.md`` and a self-contained
``report.html`` through fsspec; :func:`markdown_table` renders the paper-shaped aggregate table for the
Prefect UI markdown artifact.
"""

from diffpir_core.reporting.html import ReportSample, png_data_uri, render_html
from diffpir_core.reporting.summary import RunInfo, build_summary, metric_names
from diffpir_core.reporting.text import markdown_table, metrics_csv, render_markdown, to_json
from diffpir_core.reporting.write import REPORT_FILES, ReportFiles, write_report

__all__ = [
    "REPORT_FILES",
    "ReportFiles",
    "ReportSample",
    "RunInfo",
    "build_summary",
    "markdown_table",
    "metric_names",
    "metrics_csv",
    "png_data_uri",
    "render_html",
    "render_markdown",
    "to_json",
    "write_report",
]
