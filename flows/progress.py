"""Shard progress: the Prefect progress artifact, plus optional local listeners (the CLI's progress bar).

Listeners are plain callables ``(done, total, manifest_or_error)`` registered in this process; the
flow calls :meth:`ShardProgress.advance` as each shard finishes, so the UI and the terminal show the
same numbers. Nothing here is a flow parameter: listeners never travel to workers.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from diffpir_core.reporting import Throughput, progress_line

Listener = Callable[[int, int, Any], None]
_LISTENERS: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(done, total, item)`` for every finished shard of flows run inside this block."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


class ShardProgress:
    """A progress artifact (share of shards finished) whose description reads "48/64 images (6/8 shards),
    2.40 images/s now: <what>", updated as shards complete or fail. Skipped shards count as done but
    not towards the rate, which covers the shards restored in the last minute."""

    def __init__(self, total: int, description: str, images: int = 0, every_s: float = 1.0) -> None:
        self.total = total
        self.done = 0
        self.images_total = images
        self.images_done = 0
        self._what = description
        self._rate = Throughput()
        self._every_s = every_s
        self._published = time.monotonic()
        self._artifact_id = create_progress_artifact(
            progress=100.0 if total == 0 else 0.0, description=self._description()
        )
        for listener in list(_LISTENERS):
            listener(0, total, None)

    def _description(self) -> str:
        return f"{progress_line(self.images_done, self.images_total, self.done, self.total, self._rate.rate())}: {self._what}"

    def advance(self, item: Any) -> None:
        """Count one finished shard (manifest or error); publish the new percentage and description at most every
        ``every_s`` seconds and at the last shard (one API call per shard would cost more than small shards)."""
        self.done += 1
        if isinstance(item, dict) and item.get("status") in ("restored", "skipped"):
            self.images_done += int(item.get("images", 0))
            if item["status"] == "restored":
                self._rate.add(int(item.get("images", 0)))
        now = time.monotonic()
        if self.done == self.total or now - self._published >= self._every_s:
            self._published = now
            update_progress_artifact(
                artifact_id=self._artifact_id, progress=100.0 * self.done / max(self.total, 1), description=self._description()
            )
        for listener in list(_LISTENERS):
            listener(self.done, self.total, item)
