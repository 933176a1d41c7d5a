"""Run names that say what runs: ``sr4-faces-evaluate``, ``deblur-gaussian-imagenet-evaluate-shards``."""

import re

from prefect.runtime import flow_run

from diffpir_core.runs.job import Job


def job_run_name(suffix: str = "") -> str:
    """Task (a comparison: its size), dataset and mode of the current flow run's ``job`` parameter, plus ``suffix``;
    a ``label`` parameter (a comparison's variant and task) replaces the task."""
    job = flow_run.parameters["job"]
    job = job if isinstance(job, Job) else Job.model_validate(job)
    what = job.task_label()
    if job.is_comparison():
        cells = job.cells()
        what = f"compare-{len({c.name for c in cells})}-variants-{len({c.task for c in cells})}-tasks"
    if label := flow_run.parameters.get("label"):
        what = re.sub(r"[^\w.=-]+", "-", label.replace(" on ", "-")).strip("-")
    return f"{what}-{job.dataset_name()}-{job.mode}{suffix}"


def shards_run_name() -> str:
    """Name of the ``run-shards`` sub-flow run: ``DPS-inpaint-box-demo-tiles-evaluate-shards`` in a comparison."""
    return job_run_name("-shards")


def ingest_run_name() -> str:
    """Name of an ``ingest`` flow run."""
    return job_run_name("-ingest")


def score_run_name() -> str:
    """Name of a ``score`` flow run."""
    return job_run_name("-scores")
