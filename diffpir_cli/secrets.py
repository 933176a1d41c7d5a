"""Storage credentials never reach Prefect: ``diffpir run`` moves them from the job into this process's environment.

Flow and task parameters are stored in the Prefect database and shown by its API and UI, so a job carrying
``storage_options: {key: ..., secret: ...}`` would leave its credentials there. :func:`split_secrets` takes the
S3 credentials out of the job (``key``, ``secret``, ``token``) and
``diffpir_core.runs.environment.changed_environment`` puts them where s3fs /
botocore look by default (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) for the run:
threads of the local runner and a Dask cluster created by the run inherit them; remote Dask workers need them in
their own environment (or an instance role), which is where they belong anyway.
"""

from diffpir_core.runs.job import Job
from diffpir_flow.flows.credentials import AWS_ENV


def split_secrets(job: Job) -> tuple[Job, dict[str, str]]:
    """``job`` without the S3 credentials in ``storage_options``, and those as environment variables."""
    options = dict(job.storage_options)
    env = {
        AWS_ENV[name]: str(options.pop(name))
        for name in list(options)
        if name in AWS_ENV and options[name] is not None
    }
    if not env:
        return job, {}
    return job.model_copy(update={"storage_options": options}), env


def warning(env: dict[str, str]) -> str | None:
    """What to say about credentials found in a job file, or None."""
    if not env:
        return None
    names = ", ".join(sorted(env))
    return (
        "warning: the job file holds storage credentials (storage_options key/secret/token); they are kept out of "
        f"Prefect for this run, but put them in the environment ({names}) or ~/.aws/credentials instead of the job "
        "file"
    )
