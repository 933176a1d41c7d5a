"""Which failures are worth a retry: storage and network hiccups and CUDA memory, not bad input or config.

A storage endpoint that refuses every connection is not a hiccup: :class:`EndpointBreaker` counts consecutive
shard attempts that failed with a connection error to one endpoint, and after :data:`BREAKER_THRESHOLD` of them
(or at once when a short TCP connect to its ``endpoint_url`` fails too) every later attempt of that run fails at
once with :class:`EndpointUnreachable` (permanent, not retried), so a job against a dead endpoint fails in bounded
time, naming its shards and the cause.

Only transient failures are retried (``diffpir_flow.tasks.retries`` asks :func:`is_transient`); a permanent error (a
``ValueError`` from a bad kernel file, a ``StoreError`` from a damaged store, a checkpoint that does not load) fails
the shard at once, with its message, instead of burning retries and delay.
"""

import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import torch
from diffpir_core.io import StoreError

_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


BREAKER_THRESHOLD = 3  # consecutive failed shard attempts (connection errors, one endpoint) that open the breaker


class EndpointUnreachable(RuntimeError):
    """A shard not run (or given up) because its storage endpoint plainly is down: permanent for this run."""


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass on their own: I/O and network errors, timeouts, CUDA out of memory."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, (EndpointUnreachable, StoreError, *_PERMANENT_OS_ERRORS)):
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return type(exc).__module__.split(".")[0] in {"botocore", "aiobotocore", "aiohttp", "urllib3"}


def describe(exc: BaseException) -> str:
    """``ValueError: message`` with the kind of failure, for status files and the UI."""
    kind = "transient" if is_transient(exc) else "permanent"
    return f"{type(exc).__name__} ({kind}): {exc}"


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a connection could not be made or was lost."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, ConnectionError) or names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"}:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def storage_endpoint(uris: list[str], storage_options: dict[str, Any]) -> str | None:
    """A name for the remote storage endpoint behind ``uris`` (``s3 http://127.0.0.1:9000``), None when all are local."""
    protocols = sorted({uri.split("://", 1)[0] for uri in uris if "://" in uri and not uri.startswith("file://")})
    if not protocols:
        return None
    url = storage_options.get("endpoint_url") or (storage_options.get("client_kwargs") or {}).get("endpoint_url")
    return f"{'+'.join(protocols)} {url or 'default endpoint'}"


def _refuses(endpoint: str, timeout_s: float = 2.0) -> bool:
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


class EndpointBreaker:
    """Per (run, endpoint): the shards whose attempts failed to connect since the endpoint last answered, shared by
    the shard tasks of one process. Open once :attr:`threshold` distinct shards are in that streak (retries of one
    shard count once), or at once when a probe finds the endpoint refusing connections."""

    def __init__(self, threshold: int = BREAKER_THRESHOLD) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()
        self._streaks: dict[tuple[str, str], list[str]] = {}
        self._refused: set[tuple[str, str]] = set()

    def _open(self, key: tuple[str, str]) -> bool:
        return key in self._refused or len(set(self._streaks.get(key, ()))) >= self.threshold

    def check(self, run: str, endpoint: str | None) -> None:
        """Raise :class:`EndpointUnreachable` when the breaker of ``endpoint`` is open for ``run``."""
        if endpoint is None:
            return
        with self._lock:
            if self._open((run, endpoint)):
                raise EndpointUnreachable(self._message(run, endpoint, "not run"))

    def failed(self, run: str, endpoint: str | None, shard: str, exc: BaseException) -> EndpointUnreachable | None:
        """Count a failed attempt; the error to raise instead of ``exc`` once the breaker is open, else None."""
        if endpoint is None or not is_connection_error(exc):
            return None  # another kind of failure says nothing about the endpoint
        refused = _refuses(endpoint)  # plainly down now: no need to wait for more shards to fail
        key = (run, endpoint)
        with self._lock:
            self._streaks.setdefault(key, []).append(shard)
            if refused:
                self._refused.add(key)
            if self._open(key):
                return EndpointUnreachable(self._message(run, endpoint, f"given up ({type(exc).__name__}: {exc})"))
        return None

    def succeeded(self, run: str, endpoint: str | None) -> None:
        """An attempt that reached the endpoint: the streak starts again."""
        if endpoint is not None:
            with self._lock:
                self._streaks.pop((run, endpoint), None)
                self._refused.discard((run, endpoint))

    def _message(self, run: str, endpoint: str, what: str) -> str:
        key = (run, endpoint)
        shards = ", ".join(dict.fromkeys(self._streaks.get(key, ())))
        how = "it refuses connections" if key in self._refused else f"{self.threshold} shards in a row failed to connect"
        return (
            f"{what}: storage endpoint unreachable ({endpoint}: {how}; failed shard(s) {shards}); "
            "check the endpoint and storage_options, then re-run the job"
        )


BREAKER = EndpointBreaker()
