"""Shard progress as the ``run-shards`` flow run's Prefect progress artifact
(:class:`diffpir_core.runs.progress.RunProgress`, whose listeners, such as the CLI's progress bar, see the
same numbers)."""

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from diffpir_core.runs.progress import RunProgress, listening

__all__ = ["ShardProgress", "listening"]


class ShardProgress(RunProgress):
    """:class:`RunProgress` published as a Prefect progress artifact."""

    def _created(self, progress: float, description: str) -> None:
        self._artifact_id = create_progress_artifact(progress=progress, description=description)

    def _updated(self, progress: float, description: str) -> None:
        update_progress_artifact(artifact_id=self._artifact_id, progress=progress, description=description)
