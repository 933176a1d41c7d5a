"""Shard progress: the Prefect progress artifact, plus optional local listeners (the CLI's progress bar).

Listeners are plain callables ``(progress, manifest_or_error_or_None)`` registered in this process; the
flow calls :meth:`ShardProgress.advance` as each shard finishes, and shards restored in this process report their
sampler steps through :mod:`diffpir_core.runs.progress` (:meth:`ShardProgress.on_step`), so the UI and the terminal show
the same numbers, inside long shards too. Nothing here is a flow parameter: listeners never travel to workers.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from diffpir_core.reporting import Throughput, progress_line

Listener = Callable[["ShardProgress", Any], None]
_LISTENERS: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(progress, item)`` at the start (item None), for every finished shard, and as images advance
    inside shards (item None) of flows run inside this block."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


class ShardProgress:
    """A progress artifact (share of images restored) whose description reads "48/64 images (6/8 shards),
    2.40 images/s now: <what>", updated as shards complete or fail (at most every ``every_s``) and as images advance
    inside shards (at most every ``step_every_s``). Skipped shards count as done but not towards the rate, which
    covers the shards restored in the last minute."""

    def __init__(self, total: int, description: str, images: int = 0, every_s: float = 1.0, step_every_s: float = 10.0) -> None:
        self.total = total
        self.done = 0
        self.images_total = images
        self.images_done = 0
        self.label = description
        self._partial: dict[str, float] = {}
        self._lock = threading.Lock()
        self._rate = Throughput()
        self._every_s = every_s
        self._step_every_s = step_every_s
        self._published = time.monotonic()
        self._artifact_id = create_progress_artifact(progress=100.0 if total == 0 else 0.0, description=self._description())
        self._notify(None)

    @property
    def images_now(self) -> float:
        """Images done, fractions of the images inside running shards included."""
        with self._lock:
            return self.images_done + sum(self._partial.values())

    def _description(self) -> str:
        return f"{progress_line(int(self.images_now), self.images_total, self.done, self.total, self._rate.rate())}: {self.label}"

    def _notify(self, item: Any) -> None:
        for listener in list(_LISTENERS):
            listener(self, item)

    def _publish(self, every_s: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published < every_s:
            return
        self._published = now
        share = self.images_now / self.images_total if self.images_total else self.done / max(self.total, 1)
        update_progress_artifact(artifact_id=self._artifact_id, progress=100.0 * min(share, 1.0), description=self._description())

    def on_step(self, shard: str, images_done: float) -> None:
        """Images of the running shard ``shard`` done so far (from :class:`diffpir_core.runs.progress.ShardMeter`)."""
        with self._lock:
            self._partial[shard] = images_done
        self._publish(self._step_every_s)
        self._notify(None)

    def advance(self, item: Any, shard: str | None = None) -> None:
        """Count one finished shard ``shard`` (manifest or error); publish the new percentage and description at most every
        ``every_s`` seconds and at the last shard (one API call per shard would cost more than small shards)."""
        self.done += 1
        with self._lock:
            self._partial.pop(shard or (item.get("shard", "") if isinstance(item, dict) else ""), None)
            if isinstance(item, dict) and item.get("status") in ("restored", "skipped"):
                self.images_done += int(item.get("images", 0))
                if item["status"] == "restored":
                    self._rate.add(int(item.get("images", 0)))
        self._publish(self._every_s, force=self.done == self.total)
        self._notify(item)
