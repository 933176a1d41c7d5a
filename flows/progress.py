"""Shard progress: the Prefect progress artifact, plus optional local listeners (the CLI's progress bar).

Listeners are plain callables ``(done, total, manifest_or_error)`` registered in this process; the
flow calls :meth:`ShardProgress.advance` as each shard finishes, so the UI and the terminal show the
same numbers. Nothing here is a flow parameter: listeners never travel to workers.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

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
    """A progress artifact ("shards finished") updated as shards complete or fail."""

    def __init__(self, total: int, description: str) -> None:
        self.total = total
        self.done = 0
        self._artifact_id = create_progress_artifact(
            progress=100.0 if total == 0 else 0.0, description=description
        )
        for listener in list(_LISTENERS):
            listener(0, total, None)

    def advance(self, item: Any) -> None:
        """Count one finished shard (manifest or error) and publish the new percentage."""
        self.done += 1
        update_progress_artifact(artifact_id=self._artifact_id, progress=100.0 * self.done / max(self.total, 1))
        for listener in list(_LISTENERS):
            listener(self.done, self.total, item)
