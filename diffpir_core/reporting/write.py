"""Write a run's report files (``metrics.csv``, ``summary.json``, ``report.md``, ``report.html``,
``report-card.html``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from diffpir_core.reporting.html import Extremes, render_pages
from diffpir_core.reporting.images import ReportSample
from diffpir_core.reporting.plots import ShardTiming
from diffpir_core.reporting.summary import ReportFacts, ReportSection, Row, build_summary
from diffpir_core.reporting.text import metrics_csv, render_markdown, to_json

REPORT_FILES = ("metrics.csv", "summary.json", "report.md", "report.html", "report-card.html")


@dataclass(frozen=True)
class ReportFiles:
    """Where the report went and the summary it rendered (for UI artifacts and return values)."""

    uris: dict[str, str]
    summary: dict[str, Any]


def write_report(
    output_uri: str,
    rows: Sequence[Row],
    info: ReportFacts,
    samples: Sequence[ReportSample] = (),
    *,
    extremes: Extremes | None = None,
    timeline: Sequence[ShardTiming] = (),
    storage_options: Mapping[str, Any] | None = None,
    sections: Sequence[ReportSection] = (),
) -> ReportFiles:
    """Render every report file into the folder ``output_uri`` (local path or fsspec URI).

    ``rows``: one mapping per image (``id``, ``shard``, ``task``, metric values, ``seconds``, …);
    ``samples``: the images shown large (pick a handful: each costs its PNG size in the page);
    ``extremes``: the best and worst images by gain; ``timeline``: the shards' completion timings.
    ``sections``: what a kind of job adds (its summary key, markdown and HTML; e.g. the uncertainty's coverage).
    ``report-card.html`` is the part of the report an index page embeds (table, a few samples, plots).
    Files are overwritten, so re-running the report task is idempotent.
    """
    summary = {**build_summary(rows, info), **{section.key: dict(section.data) for section in sections}}
    extra = [fragment for section in sections for fragment in section.html]
    page, card = render_pages(summary, rows, samples, extremes=extremes, timeline=timeline, extra=extra)
    contents = {
        "metrics.csv": metrics_csv(rows),
        "summary.json": to_json(summary) + "\n",
        "report.md": render_markdown(summary) + "".join(f"\n{section.markdown}\n" for section in sections),
        "report.html": page,
        "report-card.html": card,
    }
    fs, root = fsspec.core.url_to_fs(output_uri, **dict(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    uris = {}
    for name, text in contents.items():
        path = f"{root.rstrip('/')}/{name}"
        fs.pipe_file(path, text.encode("utf-8"))
        uris[name] = f"{output_uri.rstrip('/')}/{name}"
    return ReportFiles(uris, summary)
