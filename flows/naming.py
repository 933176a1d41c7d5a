"""Run names that say what runs: ``sr4-faces-evaluate``, ``deblur-gaussian-imagenet-restore-shards``."""

from prefect.runtime import flow_run

from diffpir_core.job import Job


def job_run_name(suffix: str = "") -> str:
    """Task, dataset and mode of the current flow run's ``job`` parameter, plus ``suffix``."""
    job = flow_run.parameters["job"]
    job = job if isinstance(job, Job) else Job.model_validate(job)
    return f"{job.task_label()}-{job.dataset_name()}-{job.mode}{suffix}"


def shards_run_name() -> str:
    """Name of the ``restore-shards`` sub-flow run."""
    return job_run_name("-shards")


def ingest_run_name() -> str:
    """Name of an ``ingest`` flow run."""
    return job_run_name("-ingest")


def evaluate_run_name() -> str:
    """Name of an ``evaluate`` flow run."""
    return job_run_name("-scores")
