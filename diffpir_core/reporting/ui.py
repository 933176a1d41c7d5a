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
        for title, image in zip(titles[1:], (sample.degraded, sample.baseline, sample.restored, sample.truth), strict=False):
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

    def markdown(self) -> str:
        """``- **name**: `uri` — [open](https…) (link valid until …)`` or the note."""
        text = f"- **{self.name}**: `{self.uri}`"
        if self.https and self.expires_at:
            return text + f" — [open]({self.https}) (pre-signed, valid until {self.expires_at})"
        if self.https:
            text += f" — [open]({self.https})"
        return text + (f" — {self.note}" if self.note else "")


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
            links.append(FileLink(name, uri, note="a file on the machine that ran the flow (browsers do not open file:// links from a web page)"))
            continue
        expires = (datetime.now(UTC) + timedelta(seconds=expires_s)).isoformat(timespec="minutes")
        try:
            url = fs.sign(path, expiration=expires_s)
        except Exception as err:  # no credentials, a filesystem that cannot sign
            reason = f"{type(err).__name__}: {err}".strip(": ")
            links.append(FileLink(name, uri, note=f"no pre-signed link ({reason}); copy it with the storage's own tools, e.g. `aws s3 cp`"))
            continue
        if "Signature=" in url:
            links.append(FileLink(name, uri, https=url, expires_at=expires))
        else:
            links.append(FileLink(name, uri, https=url, note="not signed (anonymous access): opens only for a public object"))
    return links


class Throughput:
    """Images per second over the shards finished in the last ``window_s`` seconds (the current rate)."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._events: deque[tuple[float, int]] = deque()

    def add(self, images: int) -> None:
        """Count ``images`` restored just now."""
        self._events.append((self._clock(), images))

    def rate(self) -> float | None:
        """Images/s in the window (from its start, or the meter's, to now); None before any image."""
        now = self._clock()
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()
        if not self._events:
            return None
        span = now - max(now - self.window_s, self._started)
        return sum(images for _, images in self._events) / span if span > 0 else None


def progress_line(images_done: int, images_total: int, shards_done: int, shards_total: int, rate: float | None) -> str:
    """"48/64 images (6/8 shards), 2.40 images/s now" (the rate left out before the first restored shard)."""
    now = f", {rate:.2f} images/s now" if rate is not None else ""
    return f"{images_done}/{images_total} images ({shards_done}/{shards_total} shards){now}"
