"""The ``ingest`` flow: bring a job's input into a dataset store (reused when it is already there)."""

from typing import Any

from prefect import flow

from diffpir_core.runs.job import Job
from diffpir_core.runs.prepare import ingest_input
from diffpir_flow.flows.naming import ingest_run_name


@flow(name="ingest", flow_run_name=ingest_run_name)
def ingest(job: Job, force: bool = False) -> dict[str, Any]:
    """Ingest ``job.input`` into ``<job.output>/inputs/<key>.zarr``, or refresh that ingest (or check that the input
    already is a store); ``force``: write into a non-empty output diffpir did not make."""
    return ingest_input(job, force)
