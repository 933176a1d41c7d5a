"""Run reports from plain data: per-image rows, run facts and a few sample images (no Prefect here).

:func:`write_report` writes ``metrics.csv``, ``summary.json``, ``report.md``, a self-contained
``report.html`` and ``report-card.html`` through fsspec; :func:`pick_images` chooses the images a report
shows from the rows; :func:`markdown_table`, :func:`markdown_strip`, :func:`file_links` and
:func:`progress_line` render the pieces of the Prefect UI artifacts.
"""

from diffpir_core.reporting.html import Extremes, render_html, render_index, render_pages
from diffpir_core.reporting.images import ReportSample, png_data_uri
from diffpir_core.reporting.outcome import image_outcome, nothing_restored, outcome_line
from diffpir_core.reporting.plots import ShardTiming
from diffpir_core.reporting.selection import ImagePicks, pick_images
from diffpir_core.reporting.summary import ReportFacts, ReportSection, build_summary, metric_names
from diffpir_core.reporting.text import markdown_table, metrics_csv, render_markdown, to_json, verdict
from diffpir_core.reporting.ui import FileLink, Throughput, file_links, links_markdown, markdown_strip, progress_line
from diffpir_core.reporting.write import REPORT_FILES, ReportFiles, write_report

__all__ = [
    "REPORT_FILES",
    "Extremes",
    "FileLink",
    "ImagePicks",
    "ReportFiles",
    "ReportSample",
    "ReportFacts",
    "ReportSection",
    "ShardTiming",
    "Throughput",
    "build_summary",
    "file_links",
    "image_outcome",
    "links_markdown",
    "markdown_strip",
    "markdown_table",
    "metric_names",
    "metrics_csv",
    "nothing_restored",
    "outcome_line",
    "pick_images",
    "png_data_uri",
    "progress_line",
    "render_html",
    "render_index",
    "render_pages",
    "render_markdown",
    "to_json",
    "verdict",
    "write_report",
]
