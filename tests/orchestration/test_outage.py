"""A storage endpoint that goes down when the shards start (its S3 server stopped): the circuit breaker stops
retrying after a few connection failures, and the job fails in bounded time naming every shard and the cause."""

import time
from pathlib import Path

import pytest
import s3fs

from diffpir_core.runs.failures import EndpointBreaker, EndpointUnreachable
from diffpir_flow.cli.seaweed import SeaweedS3
from diffpir_flow.flows.progress import ShardProgress, listening
from diffpir_flow.flows.run import run


@pytest.fixture
def doomed_s3(s3_options: dict, s3_credentials: dict, tmp_path: Path) -> tuple[SeaweedS3, dict]:
    """A second S3 server of this test's own (the session's one stays up), with a bucket ``doomed``."""
    server = SeaweedS3(tmp_path / "seaweedfs", s3_credentials["AWS_ACCESS_KEY_ID"], s3_credentials["AWS_SECRET_ACCESS_KEY"]).start()
    options = {**s3_options, "endpoint_url": server.endpoint}
    s3fs.S3FileSystem(**options).mkdir("doomed")
    yield server, options
    server.stop()  # a no-op when the test stopped it


def test_endpoint_down_from_the_first_shard_fails_the_job_fast_naming_its_shards(
    doomed_s3, make_job, image_writer, tmp_path: Path
) -> None:
    server, options = doomed_s3
    images = tmp_path / "images"
    image_writer(images, 12, seed=7)
    job = make_job(images, "s3://doomed/out", storage_options=options, shard_size=2, retries=2, retry_delay_s=1.0)

    stopped: list[float] = []

    def stop_at_start(progress: ShardProgress, item: object) -> None:
        if progress.done == 0 and not stopped:
            stopped.append(time.monotonic())
            server.stop()  # ingest and plan are written; every shard now meets a closed port

    started = time.monotonic()
    with listening(stop_at_start):
        state = run(job=job, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    assert elapsed < 120 and time.monotonic() - stopped[0] < 60, f"took {elapsed:.0f} s to fail"
    message = state.message
    assert "6/6 shard(s) not restored" in message and "storage endpoint unreachable" in message, message
    assert options["endpoint_url"] in message
    for index in range(6):
        assert f"32x32/{index:06d}" in message, message


def test_breaker_opens_after_consecutive_shards_fail_to_connect() -> None:
    breaker = EndpointBreaker(threshold=3)
    endpoint = "faulty default endpoint"  # no URL to probe: only the count opens it
    assert breaker.failed("run", endpoint, "g/0", ValueError("bad kernel")) is None  # not a connection error
    for _ in range(4):  # retries of one shard count once
        assert breaker.failed("run", endpoint, "g/0", ConnectionResetError("reset")) is None
    breaker.succeeded("run", endpoint)  # the endpoint answered: the streak starts again
    assert breaker.failed("run", endpoint, "g/1", ConnectionResetError("reset")) is None
    assert breaker.failed("run", endpoint, "g/2", OSError("disk")) is None  # an OSError that is not about connecting
    assert breaker.failed("run", endpoint, "g/2", ConnectionRefusedError("refused")) is None
    opened = breaker.failed("run", endpoint, "g/3", ConnectionAbortedError("aborted"))
    assert isinstance(opened, EndpointUnreachable) and "failed shard(s) g/1, g/2, g/3" in str(opened)
    with pytest.raises(EndpointUnreachable, match="not run: storage endpoint unreachable"):
        breaker.check("run", endpoint)
    breaker.check("another run", endpoint)  # each run starts closed
    breaker.check("run", None)  # local storage has no breaker
