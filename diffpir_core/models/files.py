"""Byte-level facts about a checkpoint file: its sha256, and whether it is really an HTML page.

Google Drive answers a large or over-quota download with an HTML page; saved as ``.pt`` it makes
``torch.load`` fail with an unhelpful unpickling error. Both the loader and the downloader check
for this first so the user is told what actually happened.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_CHUNK = 4 << 20
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<title")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks (checkpoints are up to 2.2 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def looks_like_html(head: bytes) -> bool:
    """True when the first bytes of a file or response are an HTML document, not binary data."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<") and any(marker in text[:1024] for marker in _HTML_MARKERS)


def html_title(head: bytes) -> str | None:
    """The ``<title>`` of an HTML page, to quote it in an error message."""
    match = re.search(rb"<title[^>]*>(.*?)</title>", head, flags=re.IGNORECASE | re.DOTALL)
    if not match:
        return None
    return " ".join(match.group(1).decode("utf-8", "replace").split())[:120] or None


def read_head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file."""
    with open(path, "rb") as f:
        return f.read(size)


def html_page_message(path: Path, head: bytes) -> str:
    """The explanation given when a checkpoint file turns out to be a saved web page."""
    title = html_title(head)
    quoted = f" (page title: {title!r})" if title else ""
    return (
        f"{path} is an HTML web page{quoted}, not a checkpoint: the download saved the page a server "
        "sent instead of the file (Google Drive does this when its download quota is exceeded or when it "
        "asks to confirm a large file). Delete it and run `diffpir models download NAME`, which tries a "
        "plain-HTTP mirror first, or download the file in a browser and check it with "
        "`diffpir models verify PATH`."
    )
