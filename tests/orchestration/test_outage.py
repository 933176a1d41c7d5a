"""A storage endpoint that goes down when the shards start (its S3 server stopped): a unit stops at the first
connection failure a probe confirms, the flow run stops submitting units after a few such units in a row, and the job
fails in bounded time naming every shard and the cause."""

import time
from pathlib import Path

import pytest
import s3fs

from diffpir_core.io import ShardRef
from diffpir_core.runs.dispatch import Outage
from diffpir_core.runs.failures import UnitFailed, not_run, shard_failure
from diffpir_flow.cli.seaweed import SeaweedS3
from diffpir_flow.flows.progress import ShardProgress, listening
from diffpir_flow.flows.run import run


@pytest.fixture
def doomed_s3(s3_options: dict, s3_credentials: dict, tmp_path: Path) -> tuple[SeaweedS3, dict]:
    """A second S3 server of this test's own (the session's one stays up), with a bucket ``doomed``."""
    server = SeaweedS3(
        tmp_path / "seaweedfs", s3_credentials["AWS_ACCESS_KEY_ID"], s3_credentials["AWS_SECRET_ACCESS_KEY"]
    ).start()
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


def test_a_flow_run_stops_submitting_after_units_in_a_row_found_the_endpoint_down() -> None:
    down = shard_failure(
        "g/0", ConnectionRefusedError("refused"), "s3 http://127.0.0.1:9"
    )  # a closed port: probed down
    assert down.unreachable and not down.transient and "http://127.0.0.1:9" in down.message
    hiccup = shard_failure("g/1", ConnectionResetError("reset"), "faulty default endpoint")  # no URL to probe
    assert (hiccup.unreachable, hiccup.transient) == (False, True)
    assert not shard_failure("g/2", OSError("disk"), "s3 http://127.0.0.1:9").unreachable  # not about connecting
    assert UnitFailed([hiccup], {}).transient and not UnitFailed([hiccup, down], {}).transient  # Prefect's retry

    outage = Outage(units=2)
    outage.record([down])
    outage.record([hiccup])  # a unit that reached its endpoint ends the streak
    outage.record([down])
    assert outage.cause is None
    outage.record([down, not_run("g/3", down)])
    assert outage.cause is down
    refs = [ShardRef(group="g", index=i, start=2 * i, stop=2 * i + 2, ids=("a", "b")) for i in (4, 5)]
    skipped = outage.not_run([refs])
    assert list(skipped) == [ref.key for ref in refs] and all(
        f.unreachable and f.kind == "not run" for f in skipped.values()
    )
