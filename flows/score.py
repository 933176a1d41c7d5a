"""The ``score`` flow: metrics and report for the outputs a job has already written (shards not done are listed as
pending); for a comparison, every cell and the comparison's table."""

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from diffpir_core.runs.environment import changed_environment
from diffpir_core.runs.job import Job
from diffpir_flow.flows.cells import run_cells
from diffpir_flow.flows.credentials import block_credentials
from diffpir_flow.flows.naming import score_run_name


@flow(name="score", flow_run_name=score_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def score(job: Job, credentials_block: str | None = None) -> Any:
    """Score and report the shards of ``job`` that are done; ``credentials_block`` as for the ``run`` flow."""
    with changed_environment(block_credentials(credentials_block)):
        return run_cells(job)
