"""The ``ingest`` flow: bring a job's input into a dataset store (reused when it is already there)."""

from typing import Any

from prefect import flow

from diffpir_core.job import Job
from flows.naming import ingest_run_name
from tasks.ingest import ingest_input


@flow(name="ingest", flow_run_name=ingest_run_name)
def ingest(job: Job, force: bool = False) -> dict[str, Any]:
    """Ingest ``job.input`` into ``<job.output>/inputs/<key>.zarr``, or refresh that ingest (or check that the input
    already is a store); ``force``: write into a non-empty output diffpir did not make."""
    return ingest_input(job, force)
