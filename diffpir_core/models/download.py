"""Fetch checkpoints over HTTP(S): resumable, checksummed, and never leaving a half file under the real name.

Bytes go to ``<dest>.part``; an interrupted transfer is resumed with a ``Range`` request on the next
call. Only after the file is complete, is not an HTML page, and matches the expected sha256 (when
one is known) is it renamed onto ``dest`` with ``os.replace`` (atomic on one filesystem), so a
reader never sees a partial checkpoint.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from diffpir_core.models.files import html_page_message, looks_like_html, read_head, sha256_file
from diffpir_core.models.presets import Preset, Source, default_model_dir

_CHUNK = 1 << 20
_USER_AGENT = "diffpir-flow-model-downloader/1"


class DownloadError(RuntimeError):
    """A download failed, was interrupted, or gave a file that is not the expected checkpoint."""


class ChecksumError(DownloadError):
    """The downloaded file is complete but its sha256 is not the expected one."""


def part_path(dest: Path) -> Path:
    """Where the bytes of an unfinished download of ``dest`` are kept."""
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``.part`` file; returns ``dest``.

    Raises ``DownloadError`` on network failure (the ``.part`` file is kept: call again to resume),
    on an HTML page instead of data, and ``ChecksumError`` when the sha256 differs (the bad file is
    deleted, since resuming cannot repair it).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    _fetch_into(url, part, progress=progress, timeout=timeout)
    head = read_head(part)
    if looks_like_html(head):
        message = html_page_message(dest, head)
        part.unlink()
        raise DownloadError(f"{url} answered with a web page instead of the file. {message}")
    if sha256 is not None:
        digest = sha256_file(part)
        if digest != sha256.lower():
            part.unlink()
            raise ChecksumError(
                f"{url} gave a file with sha256 {digest}, expected {sha256.lower()}: the file is damaged or is "
                "not the expected checkpoint, and was deleted. Try again, or another source."
            )
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, asking for ``bytes=<have>-`` when some bytes are there."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return _already_complete(exc, have, url, part)
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot reach {url}: {exc}") from exc
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if resumed else "wb"
        received = have
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
                desc=part.name.removesuffix(".part"),
            ) as bar,
        ):
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _interrupted(url, part, received, total) from exc
    if total is not None and received < total:
        raise _interrupted(url, part, received, total)


def _already_complete(exc: urllib.error.HTTPError, have: int, url: str, part: Path) -> None:
    """A 416 on ``bytes=<have>-`` means the part file already holds the whole resource."""
    match = re.search(r"/(\d+)", exc.headers.get("Content-Range", ""))
    if match and int(match.group(1)) == have:
        return
    part.unlink()
    raise DownloadError(f"{url} refused to resume at byte {have}; the partial file was deleted: try again") from exc


def _interrupted(url: str, part: Path, received: int, total: int | None) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"download of {url} stopped after {received}{of} bytes; the partial file {part} is kept: "
        "run the same command again to resume"
    )


def download_preset(
    preset: Preset,
    *,
    model_dir: Path | None = None,
    sources: Iterable[Source] | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch a preset's checkpoint into the model directory, trying its sources in order.

    ``sources`` and ``sha256`` override the preset's (a private mirror, a digest you recorded).
    A file already at the destination is kept. A source that fails (network, HTML page, checksum)
    is followed by the next; ``DownloadError`` lists every failure when none works.
    """
    dest = preset.path(model_dir or default_model_dir())
    if preset.shipped is not None:
        raise DownloadError(f"{preset.name} ships with the package ({dest}); there is nothing to download")
    if dest.is_file():
        return dest
    failures = []
    for source in sources if sources is not None else preset.sources:
        try:
            return download(source.url, dest, sha256=sha256 or preset.sha256, progress=progress)
        except DownloadError as exc:
            failures.append(f"- {source.url} ({source.note}): {exc}")
    raise DownloadError(
        f"could not download {preset.name}:\n" + "\n".join(failures) + f"\nDownload {preset.filename} by other "
        f"means, put it in {dest.parent}, and check it with `diffpir models verify {dest}`"
    )
