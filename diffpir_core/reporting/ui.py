"""Pieces of a run's UI artifacts, as plain markdown and text (the orchestrator publishes them; nothing
here imports it): a small sample strip with embedded images, links to the report files that open from
a browser, and the progress line (images done / total, the current images/s).

The Prefect UI renders ``data:image/png`` images in markdown, also inside tables (checked in Chromium
against a local ``prefect server``, both the classic and the v2 UI), so the strip needs no file server.
A browser does not open ``file://`` links from an ``http://`` page, so a local report is given as its
path to copy; an ``s3://`` report gets a pre-signed HTTPS link when the credentials can sign one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec

from diffpir_core.reporting.images import ReportSample, display_image, png_data_uri
from diffpir_core.reporting.text import format_gain

STRIP_SIDE = 128
LOCAL_NOTE = (
    "Local files on the machine that ran the flow: copy the path (browsers do not open file:// links from a web page)."
)
LINK_EXPIRY_S = 7 * 24 * 3600
"""Lifetime of pre-signed links: 7 days, the longest S3 accepts for SigV4 signatures."""


def markdown_strip(samples: Sequence[ReportSample], method: str, count: int = 2, side: int = STRIP_SIDE) -> str:
    """A markdown table of the first ``count`` samples: degraded | baseline | restored | ground truth,
    each enlarged by nearest neighbour (or reduced) to ``side`` px, with the image's PSNR gain."""
    shown = list(samples[:count])
    if not shown:
        return ""
    with_truth = any(sample.truth is not None for sample in shown)
    titles = ["image", "degraded", method, "restored", *(["ground truth"] if with_truth else [])]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for sample in shown:
        gain = sample.scores.get("gain_psnr")
        label = f"`{sample.id}`" + (f" {format_gain(gain, 2)} dB" if gain is not None else "")
        cells = [label]
        for title, image in zip(
            titles[1:], (sample.degraded, sample.baseline, sample.restored, sample.truth), strict=False
        ):
            cells.append("—" if image is None else f"![{title}]({png_data_uri(display_image(image, side, side))})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FileLink:
    """A report file as a UI shows it: its URI, an HTTPS link when there is one, and why not otherwise."""

    name: str
    uri: str
    https: str | None = None
    expires_at: str | None = None
    note: str | None = None


def file_links(
    uris: Mapping[str, str], storage_options: Mapping[str, Any] | None = None, *, expires_s: int = LINK_EXPIRY_S
) -> list[FileLink]:
    """One :class:`FileLink` per report file: ``s3://`` URIs pre-signed for ``expires_s`` seconds when the
    credentials allow (the note says why not otherwise), local paths as text to copy."""
    links = []
    for name, uri in uris.items():
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if protocols & {"file", "local"}:
            links.append(FileLink(name, uri, note=LOCAL_NOTE))
            continue
        expires = (datetime.now(UTC) + timedelta(seconds=expires_s)).isoformat(timespec="minutes")
        try:
            url = fs.sign(path, expiration=expires_s)
        except Exception as err:  # no credentials, a filesystem that cannot sign
            reason = f"{type(err).__name__}: {err}".strip(": ")
            note = f"No pre-signed link ({reason}): copy the files with the storage's own tools, e.g. `aws s3 cp`."
            links.append(FileLink(name, uri, note=note))
            continue
        if "Signature=" in url:
            links.append(FileLink(name, uri, https=url, expires_at=expires))
        else:
            links.append(
                FileLink(
                    name,
                    uri,
                    https=url,
                    note="Links are not signed (anonymous access): they open only for public objects.",
                )
            )
    return links


class Throughput:
    """Images per second over the last ``window`` restored shards (the current rate): their images over the
    time since the shard before them finished (since the meter started, for the first ones)."""

    def __init__(self, window: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._started = clock()
        self._events: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def add(self, images: int) -> None:
        """Count ``images`` restored just now."""
        self._events.append((self._clock(), images))

    def rate(self) -> float | None:
        """Images/s over the window up to now; None before any image."""
        if not self._events:
            return None
        events = list(self._events)
        since = self._started if len(events) <= self.window else events.pop(0)[0]
        span = self._clock() - since
        return sum(images for _, images in events) / span if span > 0 else None


def links_markdown(links: Sequence[FileLink]) -> str:
    """The links as a markdown list, each distinct note once below it (not repeated on every line)."""
    lines = [f"- **{link.name}**: `{link.uri}`" + (f" — [open]({link.https})" if link.https else "") for link in links]
    expiry = sorted({link.expires_at for link in links if link.expires_at})
    notes = [f"Links are pre-signed and valid until {', '.join(expiry)}."] if expiry else []
    notes += list(dict.fromkeys(link.note for link in links if link.note))
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def progress_line(images_done: int, images_total: int, shards_done: int, shards_total: int, rate: float | None) -> str:
    """ "48/64 images (6/8 shards), 2.40 images/s now" (the rate left out before the first restored shard)."""
    now = f", {rate:.2f} images/s now" if rate is not None else ""
    return f"{images_done}/{images_total} images ({shards_done}/{shards_total} shards){now}"
