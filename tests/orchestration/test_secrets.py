"""An S3 job run by ``diffpir run`` with credentials in its job file: the job completes, the CLI warns where the
credentials belong, and no flow or sub-flow run parameter in the Prefect API holds them."""

import json
import os
from pathlib import Path

import pytest
import s3fs
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from typer.testing import CliRunner

from diffpir_flow.cli.app import app


def test_no_storage_secret_reaches_the_prefect_api(
    make_job, images_8: Path, s3_bucket, s3_credentials, tmp_path: Path
) -> None:
    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(images_8.glob("*.png"))[:4]:
        fs.pipe_file(f"{bucket}/in/{path.name}", path.read_bytes())
    key, secret = s3_credentials["AWS_ACCESS_KEY_ID"], s3_credentials["AWS_SECRET_ACCESS_KEY"]
    job = make_job(
        f"{bucket}/in", f"{bucket}/out", storage_options={**options, "key": key, "secret": secret}, name="secret-check"
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml(redact=False))
    assert secret in job_file.read_text()

    result = CliRunner().invoke(app, ["run", str(job_file)])
    assert result.exit_code == 0, result.output
    assert (
        "warning: the job file holds storage credentials" in result.output and "AWS_SECRET_ACCESS_KEY" in result.output
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="secret-check")))
    ours = [run for run in runs if "secret-check" in (run.name or "")]
    assert {run.name for run in ours} >= {"sr2-secret-check-evaluate", "sr2-secret-check-evaluate-shards"}, [
        r.name for r in ours
    ]
    for run in ours:
        text = json.dumps(run.parameters, default=str)
        assert secret not in text and key not in text, run.name


def test_a_secret_block_gives_a_run_its_credentials(
    make_job, images_8: Path, s3_bucket, s3_credentials, monkeypatch
) -> None:
    """A worker whose environment holds no credentials: a run naming the Secret block completes (the S3 server
    enforces the credentials), the same run without it fails for want of credentials; the environment is as before."""
    from prefect.blocks.system import Secret

    from diffpir_flow.flows.credentials import block_credentials
    from diffpir_flow.flows.run import run

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(images_8.glob("*.png"))[:2]:
        fs.pipe_file(f"{bucket}/in/{path.name}", path.read_bytes())
    key, secret = s3_credentials["AWS_ACCESS_KEY_ID"], s3_credentials["AWS_SECRET_ACCESS_KEY"]
    Secret(value={"key": key, "secret": secret}).save("diffpir-test-s3", overwrite=True)
    for name in s3_credentials:
        monkeypatch.delenv(name)
    fresh = {**options, "skip_instance_cache": True}  # no s3fs instance made earlier with the session's credentials
    job = make_job(f"{bucket}/in", f"{bucket}/out", storage_options=fresh, name="block-check", retries=0)

    refused = run(job=job, return_state=True)
    assert refused.is_failed() and ("Access Denied" in refused.message or "credentials" in refused.message.lower()), (
        refused.message
    )
    state = run(job=job, credentials_block="diffpir-test-s3", return_state=True)
    assert state.is_completed(), state.message
    assert not set(s3_credentials) & set(os.environ)
    with pytest.raises(ValueError, match="credentials_block 'missing-block': no such Secret block"):
        block_credentials("missing-block")
