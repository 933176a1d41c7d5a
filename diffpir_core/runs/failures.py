"""Shard failures as data: which are worth a retry, and which mean the storage endpoint is down.

Worth a retry (transient): storage and network hiccups, timeouts, CUDA out of memory. Not worth one (permanent): bad
input or configuration (a ``ValueError`` from a bad kernel file, a mask file that is not an image, a ``StoreError``
from a damaged store, a checkpoint that does not load), a full disk or quota, a read-only or forbidden output.

Each failed shard becomes a :class:`ShardFailure`. A work unit with failures raises :class:`UnitFailed` carrying them
and the manifests of its finished shards: Prefect retries the unit when a failure is transient
(``diffpir_flow.tasks.retries``). A connection failure is checked with a short TCP connect to the storage endpoint
(:func:`refuses`): when that fails too, the shard's failure is ``unreachable``, the unit stops, and the flow stops
submitting units after a few such units in a row (:class:`diffpir_core.runs.dispatch.Outage`).
"""

import errno
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import torch
from PIL import UnidentifiedImageError

from diffpir_core.io import StoreError

_PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    UnidentifiedImageError,
)
_FIXES = {
    errno.ENOSPC: "the output's disk is full: free space there, then re-run the job (finished shards are kept)",
    errno.EDQUOT: "the output's disk quota is spent: free space or raise the quota, then re-run the job",
    errno.EROFS: "the output is read-only: make it writable (or choose another output), then re-run the job",
    errno.EACCES: "permission denied: give this process access to the path it names, then re-run the job",
}
SHOWN = 10  # failures a message names at most


@dataclass(frozen=True)
class ShardFailure:
    """Why one shard is not done: ``kind`` (the error's type, or ``not run``), whether a retry may help
    (``transient``), whether the storage endpoint was down (``unreachable``), what happened (``message``, naming the
    file or endpoint) and, where the message does not say it, what to do (``fix``)."""

    shard: str
    kind: str
    transient: bool
    unreachable: bool
    message: str
    fix: str = ""

    @property
    def reason(self) -> str:
        """``ValueError (permanent): message``, without the fix."""
        return f"{self.kind} ({'transient' if self.transient else 'permanent'}): {self.message}"

    def __str__(self) -> str:
        return f"{self.reason}; {self.fix}" if self.fix else self.reason


class UnitFailed(Exception):
    """A work unit that finished what it could: its shards' ``failures`` and the ``manifests`` of the others."""

    def __init__(self, failures: list[ShardFailure], manifests: dict[str, dict[str, Any]]) -> None:
        super().__init__(failures, manifests)
        self.failures, self.manifests = failures, manifests

    def __str__(self) -> str:
        return "; ".join(f"shard {f.shard}: {f}" for f in self.failures[:SHOWN])

    @property
    def transient(self) -> bool:
        """Worth a retry of the unit: some failure is transient and the endpoint was not found down."""
        return any(f.transient for f in self.failures) and not any(f.unreachable for f in self.failures)


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass on their own: I/O and network errors, timeouts, CUDA out of memory."""
    if isinstance(exc, UnitFailed):
        return exc.transient
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, (StoreError, *_PERMANENT_OS_ERRORS)) or getattr(exc, "errno", None) in _FIXES:
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return type(exc).__module__.split(".")[0] in {"botocore", "aiobotocore", "aiohttp", "urllib3"}


def describe(exc: BaseException) -> str:
    """``ValueError (permanent): message`` with the kind of failure, for logs, status files and the UI."""
    return str(shard_failure("", exc))


def _fix(exc: BaseException) -> str:
    """What to do about the errors whose own words do not say it (a full or read-only disk, a file that is not an
    image)."""
    if isinstance(exc, UnidentifiedImageError):
        return "replace it with an image file (PNG, JPEG, ...), then re-run the job"
    return _FIXES.get(getattr(exc, "errno", None), "")  # type: ignore[arg-type]


def shard_failure(shard: str, exc: BaseException, endpoint: str | None = None, what: str = "") -> ShardFailure:
    """What ``exc`` says about ``shard`` (in its step ``what``, e.g. ``metrics``); a connection error is
    ``unreachable`` when a probe of the storage ``endpoint`` (:func:`refuses`) fails too."""
    if endpoint is not None and is_connection_error(exc) and refuses(endpoint):
        return ShardFailure(
            shard,
            type(exc).__name__,
            False,
            True,
            f"storage endpoint unreachable ({endpoint}: it refuses connections; {type(exc).__name__}: {exc})",
            "check the endpoint and storage_options, then re-run the job",
        )
    message = f"{what}: {exc}" if what else str(exc)
    return ShardFailure(shard, type(exc).__name__, is_transient(exc), False, message, _fix(exc))


def not_run(shard: str, cause: ShardFailure) -> ShardFailure:
    """A shard left alone because of ``cause`` (an unreachable endpoint met by another shard)."""
    return ShardFailure(shard, "not run", False, cause.unreachable, cause.message, cause.fix)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a connection could not be made or was lost."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, ConnectionError) or names & {
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ClientConnectorError",
        }:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def storage_endpoint(uris: list[str], storage_options: dict[str, Any]) -> str | None:
    """A name for the remote storage endpoint behind ``uris`` (``s3 http://127.0.0.1:9000``), None when all are
    local."""
    protocols = sorted({uri.split("://", 1)[0] for uri in uris if "://" in uri and not uri.startswith("file://")})
    if not protocols:
        return None
    url = storage_options.get("endpoint_url") or (storage_options.get("client_kwargs") or {}).get("endpoint_url")
    return f"{'+'.join(protocols)} {url or 'default endpoint'}"


def refuses(endpoint: str, timeout_s: float = 2.0) -> bool:
    """True when a TCP connect to the endpoint's URL (``storage_options.endpoint_url``) fails within ``timeout_s``;
    False when it answers or has no URL to probe (the default AWS endpoint, test filesystems)."""
    url = endpoint.split(" ", 1)[-1]
    if "://" not in url:
        return False
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError:
        return True
    return False
