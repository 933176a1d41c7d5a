"""``report.html`` and ``report-card.html``: self-contained pages (images and plots as data URIs, inline
CSS, no scripts, no network), readable offline, from S3 and as an e-mail attachment.

The report shows the run facts, the paper table with the baseline columns and one sentence on the gain,
large samples (degraded | baseline | restored | ground truth, each ≥ 256 px, click to enlarge) with a
zoomed crop of one region in every column, the best and worst images by gain, the PSNR and SSIM
histograms (restored vs baseline; the consistency histogram in restore mode), a timeline of the shards,
the per-image table (the first rows of a large job) and the configuration. The card is the part for an
index page: table, sentence, the histograms, the first two samples. Cost grows with the number of rows only
through single passes over them; the pictures are a fixed, small number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from diffpir_core.reporting.images import ReportSample, crop, crop_box, display_image, outlined, png_data_uri
from diffpir_core.reporting.plots import ShardTiming, histogram_uri, timeline_uri
from diffpir_core.reporting.summary import Row
from diffpir_core.reporting.text import (
    csv_columns,
    decimals,
    format_duration,
    format_gain,
    format_number,
    image_caption,
    paper_table_rows,
    problem_line,
    settings_line,
    to_json,
    verdict,
)

PER_IMAGE_ROWS = 200
"""Rows of the per-image table in the page; metrics.csv next to it has every image."""
SAMPLE_SIDE = 256
THUMB_SIDE = 128
CARD_SAMPLES = 2
_SAMPLES_NOTE = (
    '<p class="note">Each picture is enlarged to at least 256 px by whole pixels (nearest neighbour); '
    "click one to see it as large as the window, click again to close. The yellow frame marks the crop "
    "shown below each row: the region where the restoration differs most from the baseline, the same "
    "region in every column.</p>"
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1240px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.verdict { font-size: 1.1em; background: #eef5fb; padding: 0.5em 0.8em; border-left: 4px solid #1f6fb4; }
.sample { margin: 1em 0 2em; }
.sample h3 { margin: 0.2em 0; font-size: 1em; }
.caption { font-weight: normal; color: #444; }
.cols { display: flex; gap: 10px; flex-wrap: wrap; align-items: flex-start; margin: 0.3em 0; }
figure { margin: 0; }
figcaption { font-size: 0.85em; color: #444; text-align: center; }
img.px { image-rendering: pixelated; display: block; height: auto; border: 1px solid #ddd; }
.zoom .close { display: none; }
.zoom:target { position: fixed; inset: 0; z-index: 10; background: rgba(0, 0, 0, 0.88);
  display: flex; align-items: center; justify-content: center; }
.zoom:target img.px { width: auto; height: 92vh; max-width: 96vw; object-fit: contain; }
.zoom:target figcaption { color: #eee; }
.zoom:target .close { display: block; position: fixed; inset: 0; z-index: 11; color: #fff;
  text-align: right; padding: 0.5em 1em; text-decoration: none; font-size: 1.5em; }
.plots { display: flex; gap: 1em; flex-wrap: wrap; }
.missing { width: 120px; color: #888; font-size: 0.85em; text-align: center; }
.problem { color: #a00; }
.note { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 1em; }
"""


_HISTOGRAM_TITLES = {
    "psnr": "PSNR (dB) per image",
    "ssim": "SSIM per image",
    "measurement_rms": "‖y − A(x)‖ RMS per image",
}


@dataclass(frozen=True)
class Extremes:
    """The best and worst images of a run by ``metric`` (a ``gain_`` column), best first / worst first."""

    metric: str
    best: Sequence[ReportSample]
    worst: Sequence[ReportSample]


def render_pages(
    summary: Mapping[str, Any],
    rows: Sequence[Row],
    samples: Sequence[ReportSample] = (),
    *,
    extremes: Extremes | None = None,
    timeline: Sequence[ShardTiming] = (),
    href: str | None = None,
    card_samples: int = CARD_SAMPLES,
    extra: Sequence[str] = (),
) -> tuple[str, str]:
    """The report page and its card (see the module docstring), sharing the rendered samples and plots;
    the card's title links ``href`` and it shows the first ``card_samples`` samples; ``extra``: HTML fragments of a
    kind of job's own section (after the samples, in the page and the card)."""
    method = _method(summary)
    results = _results(summary)
    blocks = [_sample_block(sample, method) for sample in samples]
    distributions = _distributions(summary, rows)
    body = [
        f"<h1>DiffPIR restoration report: {escape(str(summary['task']))}</h1>",
        "<ul>",
        f"<li>dataset: <code>{escape(str(summary['dataset']))}</code></li>",
        f"<li>prior: <code>{escape(str(summary['prior']))}</code>; baseline: {escape(method)}</li>",
        f"<li>settings that ran: {escape(settings_line(summary.get('config') or {}))} · {summary.get('nfes')} "
        "NFEs</li>",
        f"<li>mode: {escape(str(summary['mode']))}; images scored: {summary['images']}; "
        f"generated {escape(str(summary['generated_at']))}</li>",
        "</ul>",
        "<h2>Results</h2>",
        *results,
        *_problems(summary),
    ]
    if blocks:
        body += ["<h2>Samples</h2>", _SAMPLES_NOTE, *blocks]
    body += extra
    if extremes is not None and (extremes.best or extremes.worst):
        body += _extremes(extremes, method)
    body += distributions
    if timeline:
        body += _timeline(timeline)
    body += ["<h2>Per-image metrics</h2>", _csv_table(rows)]
    body += ["<h2>Configuration</h2>", f"<pre>{escape(to_json(summary['config']))}</pre>"]
    title = escape(str(summary["task"]))
    heading = f'<a href="{escape(href)}">{title}</a>' if href else title
    card = [
        f'<section class="card"><h2>{heading}</h2>',
        *results,
        *distributions,
        *blocks[:card_samples],
        *extra,
        "</section>",
    ]
    return _page(f"DiffPIR report: {summary['task']}", body), "\n".join(card) + "\n"


def render_html(
    summary: Mapping[str, Any],
    rows: Sequence[Row],
    samples: Sequence[ReportSample] = (),
    *,
    extremes: Extremes | None = None,
    timeline: Sequence[ShardTiming] = (),
) -> str:
    """The whole report page (see the module docstring for what it shows)."""
    return render_pages(summary, rows, samples, extremes=extremes, timeline=timeline, card_samples=0)[0]


def render_index(
    title: str, intro: str, summaries: Sequence[Mapping[str, Any]], cards: Sequence[tuple[str, str]]
) -> str:
    """A page over several runs: ``intro`` (text), one table of all ``summaries``, then each run's card
    (``report-card.html`` text) after a link to its full report (``(href, card)`` pairs)."""
    header, lines = paper_table_rows(summaries)
    body = [f"<h1>{escape(title)}</h1>", f"<p>{escape(intro)}</p>", _table(header, lines)]
    for href, card in cards:
        body += [
            card,
            f'<p class="note">The full report of this task: <a href="{escape(href)}">{escape(href)}</a></p>',
        ]
    return _page(title, body)


def _page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _method(summary: Mapping[str, Any]) -> str:
    return str((summary.get("baseline") or {}).get("method") or "baseline")


def _results(summary: Mapping[str, Any]) -> list[str]:
    header, lines = paper_table_rows([summary])
    sentence = verdict(summary)
    return [_table(header, lines)] + ([f'<p class="verdict">{escape(sentence)}</p>'] if sentence else [])


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    rows = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>" for cells in lines)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _csv_table(rows: Sequence[Row]) -> str:
    """Per-image table with the columns of metrics.csv (the first PER_IMAGE_ROWS images), numbers rounded."""
    if not rows:
        return "<p>No images were scored.</p>"
    columns = csv_columns(rows)
    shown = rows[:PER_IMAGE_ROWS]
    note = (
        f'<p class="note">The first {len(shown)} of {len(rows)} images; metrics.csv beside this report has all.</p>'
        if len(rows) > len(shown)
        else ""
    )
    return note + _table(columns, [[_cell(row.get(column), column) for column in columns] for row in shown])


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if column.startswith("gain_"):
            return format_gain(float(value), decimals(column))
        return format_number(float(value), decimals(column))
    return str(value)


def _figure(image_u8: np.ndarray | None, label: str, side: int) -> str:
    """One picture enlarged to ``side`` px (nearest neighbour); a click shows it as large as the window."""
    if image_u8 is None:
        return (
            '<figure><div class="missing">no baseline for this image: on large images the baseline is scored on a '
            f"subset of them, picked by id, to bound its cost</div><figcaption>{escape(label)}</figcaption></figure>"
        )
    uri = png_data_uri(image_u8)
    anchor = "z" + hashlib.sha1((label + uri).encode("ascii", "replace")).hexdigest()[:12]
    return (
        f'<figure class="zoom" id="{anchor}"><a href="#{anchor}">'
        f'<img class="px" src="{uri}" width="{side}" alt="{escape(label)}"></a>'
        f'<a class="close" href="#_" title="close">×</a><figcaption>{escape(label)}</figcaption></figure>'
    )


def _columns(sample: ReportSample, method: str) -> list[tuple[str, np.ndarray | None]]:
    columns = [("degraded", sample.degraded), (method, sample.baseline), ("restored", sample.restored)]
    return columns + ([("ground truth", sample.truth)] if sample.truth is not None else [])


def _sample_block(sample: ReportSample, method: str) -> str:
    """Title with the image's numbers, the columns at ≥ 256 px with the crop framed, then the crops."""
    box = crop_box(
        sample.restored,
        sample.baseline,
        align=max(1, sample.restored.shape[0] // sample.degraded.shape[0]),
        unknown=sample.unknown,
    )
    reference = sample.restored.shape
    full, zoomed = [], []
    for label, image in _columns(sample, method):
        if image is None:
            full.append(_figure(None, label, SAMPLE_SIDE))
            zoomed.append(_figure(None, f"{label}, crop", SAMPLE_SIDE))
            continue
        full.append(_figure(outlined(display_image(image, SAMPLE_SIDE), box, reference), label, SAMPLE_SIDE))
        zoomed.append(_figure(display_image(crop(image, box, reference), SAMPLE_SIDE), f"{label}, crop", SAMPLE_SIDE))
    caption = image_caption(sample.scores, method)
    return (
        f'<div class="sample"><h3>{escape(sample.id)} <span class="caption">{escape(caption)}</span></h3>'
        f'<div class="cols">{"".join(full)}</div><div class="cols">{"".join(zoomed)}</div></div>'
    )


def _extremes(extremes: Extremes, method: str) -> list[str]:
    metric = extremes.metric.removeprefix("gain_")
    parts = [f"<h2>Best and worst images by {escape(metric.upper())} gain over {escape(method)}</h2>"]
    for title, samples in (("Best", extremes.best), ("Worst", extremes.worst)):
        if not samples:
            continue
        head = "".join(
            f"<th>{escape(cell)}</th>"
            for cell in ("#", "image", "shard", metric.upper(), f"{method} {metric.upper()}", "gain", "pictures")
        )
        lines = []
        for rank, sample in enumerate(samples, 1):
            pictures = [(label, image) for label, image in _columns(sample, method)[1:] if image is not None]
            thumbs = "".join(
                _figure(display_image(image, THUMB_SIDE, 2 * THUMB_SIDE), label, THUMB_SIDE)
                for label, image in pictures
            )
            cells = [
                str(rank),
                escape(sample.id),
                escape(str(sample.scores.get("shard", ""))),
                format_number(sample.scores.get(metric), decimals(metric)),
                format_number(sample.scores.get(f"baseline_{metric}"), decimals(metric)),
                format_gain(sample.scores.get(extremes.metric), decimals(metric)),
            ]
            lines.append(
                "<tr>"
                + "".join(f"<td>{cell}</td>" for cell in cells)
                + f'<td><div class="cols">{thumbs}</div></td></tr>'
            )
        parts += [f"<h3>{title}</h3>", f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"]
    return parts


def _distributions(summary: Mapping[str, Any], rows: Sequence[Row]) -> list[str]:
    """Histograms of restored vs baseline: PSNR and SSIM, or the measurement consistency in restore mode."""
    method = _method(summary)
    full_reference = any(row.get("psnr") is not None for row in rows)
    plots = []
    for metric in ("psnr", "ssim") if full_reference else ("measurement_rms",):
        restored = [row.get(metric) for row in rows]
        if all(value is None for value in restored):
            continue
        baseline = [row.get(f"baseline_{metric}") for row in rows]
        uri = histogram_uri(
            restored, baseline, title=_HISTOGRAM_TITLES[metric], restored_label="restored", baseline_label=method
        )
        plots.append(f'<img class="plot" src="{uri}" width="520" alt="{escape(metric)} histogram">')
    if not plots:
        return []
    note = (
        '<p class="note">Infinite PSNRs (identical images) are left out of the histogram.</p>'
        if any(row.get("psnr") == float("inf") for row in rows)
        else ""
    )
    return ["<h2>Distributions</h2>", f'<div class="plots">{"".join(plots)}</div>', note]


def _timeline(timeline: Sequence[ShardTiming]) -> list[str]:
    """The shard timeline and the time per phase summed over the shards (where the time went)."""
    totals: dict[str, float] = {}
    for timing in timeline:
        for name, seconds in timing.phases.items():
            totals[name] = totals.get(name, 0.0) + seconds
    whole = sum(totals.values()) or 1.0
    lines = [
        [name, format_duration(seconds), f"{100 * seconds / whole:.1f} %", f"{seconds / len(timeline):.3f}"]
        for name, seconds in totals.items()
    ]
    starts = [t.finished_at - sum(t.phases.values()) for t in timeline]
    span = max(t.finished_at for t in timeline) - min(starts)
    return [
        "<h2>Where the time went</h2>",
        f'<p class="note">{len(timeline)} shard(s) from their completion records, first start to last finish '
        f"{format_duration(span)} (shards restored by an earlier run keep their own times).</p>",
        f'<img class="plot" src="{timeline_uri(timeline)}" width="900" alt="shard timeline">',
        _table(["phase", "total", "share", "mean s per shard"], lines),
    ]


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
