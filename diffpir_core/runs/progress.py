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
    """Counts one shard's restoration by sampler step; ``steps`` is the sampler's steps per image (its NFEs)."""

    def __init__(self, shard: str, ids: list[str], steps: int, log: logging.Logger | logging.LoggerAdapter, every_s: float = 1.0) -> None:
        self.shard, self.ids, self.steps, self._log, self._every_s = shard, ids, max(1, steps), log, every_s
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
            listener(self.shard, done)

    def step(self, start: int, stop: int, index: int) -> None:
        """The batch of images ``start:stop`` finished sampler step ``index`` (0-based)."""
        self._tell(start + (stop - start) * min(1.0, (index + 1) / self.steps))

    def batch(self, start: int, stop: int) -> None:
        """The batch ``start:stop`` is restored: one log line per image, with the batch's time per image."""
        seconds = time.perf_counter() - self._batch_started
        for index in range(start, stop):
            self._log.info(
                "shard %s: image %d/%d %s restored in %.1f s%s", self.shard, index + 1, len(self.ids), self.ids[index],
                seconds / (stop - start), f" (batch of {stop - start}, {seconds:.1f} s)" if stop - start > 1 else "",
            )
        self._batch_started = time.perf_counter()
        self._tell(stop, force=True)
