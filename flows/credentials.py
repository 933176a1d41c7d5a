"""Storage credentials for a run without putting them in its parameters: from a Prefect Secret block, into the
run's environment.

Flow-run parameters are stored in Prefect's database and shown by its API and UI, so a job never carries credentials
there (``Job.storage_options`` leaves them out of its JSON, and the server refuses a run whose parameters hold them).
A run takes them from the worker's environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, or ``~/.aws``, or an instance role: where s3fs looks by default), or from the Secret block named
by the flow's ``credentials_block`` parameter, whose value is ``{"key": ..., "secret": ..., "token": ...}``: the flow
loads it on the worker and sets those variables for the run. Threads of the local runner and a Dask cluster created by
the run inherit them; the workers of an existing Dask cluster need them in their own environment.
"""

AWS_ENV = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN"}


def block_credentials(name: str | None) -> dict[str, str]:
    """The ``AWS_*`` variables held by the Secret block ``name`` (none for None); a clear error if it is not usable."""
    if not name:
        return {}
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as err:
        raise ValueError(
            f"credentials_block {name!r}: no such Secret block ({err}); create it with "
            f"Secret(value={{'key': ..., 'secret': ...}}).save({name!r}) or in the UI (Blocks → Secret)"
        ) from None
    if not isinstance(value, dict) or not {"key", "secret"} <= value.keys():
        raise ValueError(
            f"credentials_block {name!r}: its value must be JSON with 'key' and 'secret' (and optionally 'token')"
        )
    return {AWS_ENV[name]: str(item) for name, item in value.items() if name in AWS_ENV and item is not None}
