"""Progress inside a shard, per sampler step and per image: a shard of large photos runs for minutes (tiling makes
about a hundred tile forwards per step), and shard-level progress alone showed nothing for that long.

:class:`ShardMeter` is told by the restoring loop when a batch finishes a sampler step and when it finishes; it logs
one line per finished image with its time and tells this process's listeners (``watching``) how many of the shard's
images are done, fractions included. Listeners are plain callables ``(shard key, images done)``; the flow's progress
artifact and the CLI's bar are two. Nothing here is Prefect: a worker in another process simply has no listener.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from diffpir_core.reporting import Throughput, progress_line

StepListener = Callable[[str, float], None]
_LISTENERS: list[StepListener] = []
_LOCK = threading.Lock()


@contextmanager
def watching(listener: StepListener) -> Iterator[None]:
    """Call ``listener(shard key, images done)`` as shards restored in this process advance, inside this block."""
    with _LOCK:
        _LISTENERS.append(listener)
    try:
        yield
    finally:
        with _LOCK:
            _LISTENERS.remove(listener)


class ShardMeter:
    """Counts one shard's restoration by sampler step; ``steps`` is the sampler's steps per restored row (its NFEs),
    ``ids`` labels the rows; ``per_image`` rows make one image (a job with K posterior samples restores K rows per
    image, so an image costs K × NFEs and is done when its K rows are)."""

    def __init__(
        self,
        shard: str,
        ids: list[str],
        steps: int,
        log: logging.Logger | logging.LoggerAdapter,
        every_s: float = 1.0,
        per_image: int = 1,
    ) -> None:
        self.shard, self.ids, self.steps, self._log, self._every_s = shard, ids, max(1, steps), log, every_s
        self.per_image = max(1, per_image)
        self._batch_started = time.perf_counter()
        self._told = 0.0

    def _tell(self, done: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._told < self._every_s:
            return
        self._told = now
        with _LOCK:
            listeners = list(_LISTENERS)
        for listener in listeners:
            listener(self.shard, done / self.per_image)

    def step(self, start: int, stop: int, index: int) -> None:
        """The batch of images ``start:stop`` finished sampler step ``index`` (0-based)."""
        self._tell(start + (stop - start) * min(1.0, (index + 1) / self.steps))

    def batch(self, start: int, stop: int) -> None:
        """The batch ``start:stop`` is restored: one log line per image, with the batch's time per image."""
        seconds = time.perf_counter() - self._batch_started
        for index in range(start, stop):
            self._log.info(
                "shard %s: image %d/%d %s restored in %.1f s%s",
                self.shard,
                index + 1,
                len(self.ids),
                self.ids[index],
                seconds / (stop - start),
                f" (batch of {stop - start}, {seconds:.1f} s)" if stop - start > 1 else "",
            )
        self._batch_started = time.perf_counter()
        self._tell(stop, force=True)


Listener = Callable[["RunProgress", Any], None]
_RUN_LISTENERS: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(progress, item)`` at the start (item None), for every finished shard, and as images advance
    inside shards (item None) of flows run inside this block."""
    _RUN_LISTENERS.append(listener)
    try:
        yield
    finally:
        _RUN_LISTENERS.remove(listener)


class RunProgress:
    """The progress of a run's shards (share of images restored), published through :meth:`_created` and
    :meth:`_updated` (a subclass: the flow's Prefect progress artifact), with a description that reads
    "48/64 images (6/8 shards), 2.40 images/s now: <what>", updated as shards complete or fail (at most every
    ``every_s``) and as images advance
    inside shards (at most every ``step_every_s``). Skipped shards count as done but not towards the rate, which
    covers the shards restored in the last minute."""

    def __init__(
        self, total: int, description: str, images: int = 0, every_s: float = 1.0, step_every_s: float = 10.0
    ) -> None:
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
        self._created(100.0 if total == 0 else 0.0, self._description())
        self._notify(None)

    @property
    def images_now(self) -> float:
        """Images done, fractions of the images inside running shards included."""
        with self._lock:
            return self.images_done + sum(self._partial.values())

    def _description(self) -> str:
        line = progress_line(int(self.images_now), self.images_total, self.done, self.total, self._rate.rate())
        return f"{line}: {self.label}"

    def _notify(self, item: Any) -> None:
        for listener in list(_RUN_LISTENERS):
            listener(self, item)

    def _publish(self, every_s: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published < every_s:
            return
        self._published = now
        share = self.images_now / self.images_total if self.images_total else self.done / max(self.total, 1)
        self._updated(100.0 * min(share, 1.0), self._description())

    def on_step(self, shard: str, images_done: float) -> None:
        """Images of the running shard ``shard`` done so far (from :class:`ShardMeter`)."""
        with self._lock:
            self._partial[shard] = images_done
        self._publish(self._step_every_s)
        self._notify(None)

    def advance(self, item: Any, shard: str | None = None) -> None:
        """Count one finished shard ``shard`` (manifest or error); publish the new percentage and description at most
        every
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

    def _created(self, progress: float, description: str) -> None:
        """Publish the first state (percent, description); nothing here."""

    def _updated(self, progress: float, description: str) -> None:
        """Publish a new state (percent, description); nothing here."""
