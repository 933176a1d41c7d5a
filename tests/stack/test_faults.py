"""Faults on the production stack (``scripts/stack.sh``): deployment runs through a PostgreSQL-backed Prefect server
and its process workers, S3 on SeaweedFS, shards on a Dask cluster of separate processes; a part is killed or
stopped mid-run and the run (or its re-run) must end with every shard restored once and the results of an
uninterrupted run. Each test prints what was killed when, the time to recover and the shards restored twice.
"""

import json
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from uuid import UUID

import numpy as np
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import Scheduled

from diffpir_core.io import DatasetStore
from diffpir_core.runs.plan import read_plans
from diffpir_core.runs.status import job_status

pytestmark = [pytest.mark.stack, pytest.mark.slow]
SHARDS = 6  # images of a fault test's job, one per shard
SLOW = {"iter_num": 12}  # sampler steps: a shard lasts long enough (~1-2 s) for a fault to land mid-run
BURST = 6  # runs submitted at once: each starts a flow-run process (about 15 CPU-s on 2 cores, mostly imports)


def _psql(stack, sql: str) -> str:
    """Run ``sql`` on the stack's Prefect database."""
    binary = (stack.dir / "postgres.bin").read_text().strip()
    port = stack.env["STACK_PG_PORT"]
    done = subprocess.run(
        [f"{binary}/psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "prefect", "-tA", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def _rows_holding(stack, pattern: str) -> dict[str, int]:
    """Rows of every table of the Prefect database whose text matches the POSIX regex ``pattern``, by table."""
    tables = _psql(stack, "select table_name from information_schema.tables where table_schema = 'public'").split()
    counts = {
        table: int(_psql(stack, f"select count(*) from \"{table}\" x where x::text ~ '{pattern}'")) for table in tables
    }
    return {table: count for table, count in counts.items() if count}


def _restored(stack, output: str) -> dict[str, np.ndarray]:
    """The restored pixels of the one job in ``output``, by image id."""
    options = stack.reader_options()
    plan = read_plans(output, options)[0]
    store, source = DatasetStore.open(plan.output_store, options), DatasetStore.open(plan.input_store, options)
    restored = {}
    for ref in store.shards():
        ids = [row.id for row in source.read_meta(ref)]
        restored.update(zip(ids, store.read_array(ref, plan.restored_array), strict=True))
    return restored


def _done(stack, output: str) -> int:
    try:
        return job_status(output, stack.reader_options())["counts"]["done"]
    except (FileNotFoundError, OSError):  # no plan yet, or the store is being written
        return 0


def _unit_runs(run_id: UUID) -> dict[str, list[tuple[str, datetime]]]:
    """(state name, time), in order, of every ``restore-*`` task run of the run's sub-flow(s), by task-run name."""
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )
        ids = [run_id, *(child.id for child in children)]
        tasks = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids)), limit=200
        )
        return {
            task.name: [(state.name, state.timestamp) for state in client.read_task_run_states(task.id)]
            for task in tasks
            if task.name.startswith("restore-")
        }


def _shard_tables(run_id: UUID) -> list[dict[str, str]]:
    """The shards tables (artifacts) of the run, one per attempt that reached its report, oldest first: status by
    shard."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), type=ArtifactFilterType(any_=["table"])
            )
        )
    artifacts = sorted(artifacts, key=lambda artifact: artifact.created)
    tables = [json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data for artifact in artifacts]
    return [{row["shard"]: row["status"] for row in rows} for rows in tables]


def _unit_shards(name: str) -> list[str]:
    """The shard keys of a work unit's task-run name: ``restore-32x32/000003..000005`` or ``restore-32x32/000003``."""
    group, _, span = name.removeprefix("restore-").partition("/")
    first, _, last = span.partition("..")
    return [f"{group}/{index:06d}" for index in range(int(first), int(last or first) + 1)]


def _restored_twice(stack, output: str, run_ids: list[UUID]) -> tuple[int, int]:
    """(shards restored by more than one execution, work units that ran again after finishing). Two runs restored a
    shard when both report it restored. A unit that had finished can run again when Dask loses the worker holding
    its result; it restored a shard again only if that shard's record was written after the unit started again
    (otherwise its skip check found the record and left the shard alone)."""
    restorations: Counter[str] = Counter()
    for run_id in run_ids:
        for table in _shard_tables(run_id):
            restorations.update(key for key, status in table.items() if status == "restored")
    finished = {
        shard["id"]: datetime.fromisoformat(shard["finished_at"])
        for shard in job_status(output, stack.reader_options())["shards"]
    }
    again = 0
    for run_id in run_ids:
        for name, states in _unit_runs(run_id).items():
            names = [state for state, _ in states]
            if names.count("Completed") < 2:
                continue
            again += 1
            restarted = next(at for state, at in states[names.index("Completed") + 1 :] if state == "Running")
            restorations.update(key for key in _unit_shards(name) if finished[key] >= restarted)
    return sum(count > 1 for count in restorations.values()), again


def _assert_as_uninterrupted(stack, output: str, expected: dict[str, np.ndarray], twice: int) -> None:
    """Every image restored, equal to an uninterrupted run's, and no shard restored twice."""
    restored = _restored(stack, output)
    assert restored.keys() == expected.keys()
    for key, pixels in expected.items():
        np.testing.assert_array_equal(restored[key], pixels, err_msg=key)
    assert twice == 0


def _wait_for_shards(stack, output: str, count: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while _done(stack, output) < count:
        assert time.monotonic() < deadline, f"fewer than {count} shards done in {output} after {timeout:.0f} s"
        time.sleep(0.3)
    return time.monotonic()


def test_dask_worker_killed_mid_job(stack) -> None:
    job = stack.job("dask-kill", SHARDS, sampler=SLOW, runner={"kind": "dask", "address": stack.dask})
    expected = stack.expected(job, stack.images("dask-kill", SHARDS))
    started = time.monotonic()
    run_id = stack.submit(job)
    killed = _wait_for_shards(stack, job["output"], 2)
    stack.kill("dask-worker-1")
    run = stack.wait(run_id)
    recovered = time.monotonic()
    try:
        assert run.state.is_completed(), run.state.message
        twice, again = _restored_twice(stack, job["output"], [run_id])
        print(
            f"\ndask worker killed {killed - started:.1f} s into the run (2 shards done); completed "
            f"{recovered - killed:.1f} s later; "
            f"shards restored twice: {twice}; work units run again after finishing: {again}"
        )
        _assert_as_uninterrupted(stack, job["output"], expected, twice)
    finally:
        stack.script("up")  # the worker back for the next tests


def _flow_run_process(stack, timeout: float = 60) -> psutil.Process:
    """The process a Prefect worker of the stack started for a flow run (``python -m prefect.engine``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in ("prefect-worker-1", "prefect-worker-2"):
            for child in psutil.Process(stack.pid(name)).children(recursive=True):
                if "prefect.engine" in " ".join(child.cmdline()):
                    return child
        time.sleep(0.2)
    raise AssertionError(f"no flow-run process under the stack's Prefect workers after {timeout:.0f} s")


def _done_shards(stack, output: str) -> set[str]:
    return {shard["id"] for shard in job_status(output, stack.reader_options())["shards"] if shard["state"] == "done"}


def _retry(run_id: UUID, timeout: float = 60) -> None:
    """Retry a final run as the UI's Retry and ``prefect flow-run retry`` do (state Scheduled, forced), once the
    process worker has reported the exit of its infrastructure: it does so after the run's own crash report
    (~15 s later, measured) and would overwrite an earlier retry's state with Crashed."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while not any(
            (state.message or "").startswith("Flow run infrastructure exited")
            for state in client.read_flow_run_states(run_id)
        ):
            if time.monotonic() > deadline:
                break  # a run that ended by itself (Failed) has no such report
            time.sleep(0.5)
        client.set_flow_run_state(run_id, Scheduled(message="Retried via the API"), force=True)


def test_flow_run_process_killed_then_retried_through_the_api(stack) -> None:
    job = stack.job("run-kill", SHARDS, sampler=SLOW)
    expected = stack.expected(job, stack.images("run-kill", SHARDS))
    started = time.monotonic()
    run_id = stack.submit(job)
    process = _flow_run_process(stack)
    killed = _wait_for_shards(stack, job["output"], 2)
    for victim in [*process.children(recursive=True), process]:
        victim.kill()
    done_before = _done_shards(stack, job["output"])
    run = stack.wait(run_id, timeout=60)
    crashed = time.monotonic()
    assert run.state.is_crashed(), (run.state.name, run.state.message)
    _retry(run_id)
    run = stack.wait(run_id)
    assert run.state.is_completed(), run.state.message
    finished = time.monotonic()
    (statuses,) = _shard_tables(run_id)  # the killed attempt never reached its report
    twice = sum(statuses.get(key) == "restored" for key in done_before)
    print(
        f"\nflow-run process killed {killed - started:.1f} s into the run ({len(done_before)} shards done); Crashed "
        f"{crashed - killed:.1f} s later; the retry completed {finished - crashed:.1f} s after that; shards restored "
        f"twice: {twice}"
    )
    assert {key for key, status in statuses.items() if status == "skipped"} >= done_before
    _assert_as_uninterrupted(stack, job["output"], expected, twice)


def test_s3_server_stopped_for_20_s_mid_run(stack) -> None:
    job = stack.job("s3-outage", SHARDS, sampler=SLOW)
    expected = stack.expected(job, stack.images("s3-outage", SHARDS))
    started = time.monotonic()
    run_id = stack.submit(job)
    stopped = _wait_for_shards(stack, job["output"], 2)
    stack.kill("seaweedfs", signal.SIGTERM)
    time.sleep(20)
    stack.script("up")
    back = time.monotonic()
    run = stack.wait(run_id)
    runs = [run_id]
    if not run.state.is_completed():
        assert run.state.is_failed(), run.state.message
        assert stack.s3 in run.state.message and "/0000" in run.state.message, (
            run.state.message
        )  # names the endpoint and shards
        runs.append(stack.submit(job))
        rerun = stack.wait(runs[-1])
        assert rerun.state.is_completed(), rerun.state.message
    finished = time.monotonic()
    twice, _ = _restored_twice(stack, job["output"], runs)
    print(
        f"\nSeaweedFS stopped {stopped - started:.1f} s into the run for {back - stopped:.1f} s; first run "
        f"{run.state.name}; "
        f"all shards done {finished - back:.1f} s after the restart ({len(runs)} run(s)); shards restored twice: "
        f"{twice}"
    )
    _assert_as_uninterrupted(stack, job["output"], expected, twice)


def _exited(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _final_or_orphaned(stack, run_id: UUID, process: psutil.Process, grace: float = 10) -> FlowRun:
    """The run once it is final, or once its flow-run process has been gone for ``grace`` seconds while the server
    still shows it running: a process that ended while the database was down could not record its last state, nor
    could its worker (both got HTTP 500), and nothing corrects it later; a Retry through the API recovers it."""
    gone_since = None
    deadline = time.monotonic() + 150
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if _exited(process):
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > grace:
                    return run
            assert time.monotonic() < deadline, (
                f"run {run_id} still {run.state and run.state.name} after 150 s, its process alive"
            )
            time.sleep(0.5)


def test_database_restarted_mid_run(stack) -> None:
    job = stack.job("pg-restart", SHARDS, sampler=SLOW)
    expected = stack.expected(job, stack.images("pg-restart", SHARDS))
    started = time.monotonic()
    run_id = stack.submit(job)
    process = _flow_run_process(stack)
    stopped = _wait_for_shards(stack, job["output"], 2)
    stack.kill("postgres", signal.SIGINT)  # PostgreSQL's fast shutdown: every connection is cut
    while psutil.pid_exists(stack.pid("postgres")):
        time.sleep(0.1)
    time.sleep(5)
    stack.script("up")  # starts PostgreSQL again on the same data
    back = time.monotonic()
    run = _final_or_orphaned(stack, run_id, process)
    first = run.state.name if run.state.is_final() else f"{run.state.name} (its process had exited unrecorded)"
    if not run.state.is_completed():  # the run could not record its states while the database was down: retry it
        _retry(run_id, timeout=30)
        run = stack.wait(run_id)
    assert run.state.is_completed(), run.state.message
    finished = time.monotonic()
    twice, _ = _restored_twice(stack, job["output"], [run_id])
    print(
        f"\nPostgreSQL stopped {stopped - started:.1f} s into the run and started {back - stopped:.1f} s later; the "
        "run ended "
        f"{first}, completed {finished - back:.1f} s after the restart (run count {run.run_count}); shards restored "
        f"twice: {twice}"
    )
    _assert_as_uninterrupted(stack, job["output"], expected, twice)


def test_many_runs_submitted_at_once_all_complete(stack) -> None:
    jobs = [stack.job(f"burst-{i:02d}", 1) for i in range(BURST)]
    started = time.monotonic()
    run_ids = [stack.submit(job) for job in jobs]
    runs = [stack.wait(run_id, timeout=240) for run_id in run_ids]
    print(f"\n{len(runs)} runs submitted at once: all final {time.monotonic() - started:.1f} s later")
    assert [run.state.name for run in runs] == ["Completed"] * len(jobs), [
        run.state.message for run in runs if not run.state.is_completed()
    ]
    for job in jobs:
        assert _done(stack, job["output"]) == 1, job["output"]


def test_no_credential_reaches_the_prefect_database(stack) -> None:
    """Last: it searches every table after the runs above (a run of its own when it runs alone)."""
    key, secret = stack.credentials["key"], stack.credentials["secret"]
    job = stack.job("credentials", 2)
    with get_client(sync_client=True) as client:
        if not client.read_flow_runs(limit=1):
            assert stack.wait(stack.submit(job)).state.is_completed()
        typed = job | {
            "storage_options": {"endpoint_url": stack.s3, "key": key, "secret": secret}
        }  # as a user might in the UI
        with pytest.raises(PrefectHTTPStatusError, match="storage_options"):
            client.create_flow_run_from_deployment(stack.deployment_id, parameters={"job": typed})
    assert _rows_holding(stack, secret) == {}
    # the access key id is only in the report's pre-signed links (S3 signs with it; the link is useless without its
    # signature)
    assert _rows_holding(stack, f"(^|[^=]){key}") == {}
    assert _rows_holding(stack, f"AWSAccessKeyId={key}"), "expected pre-signed report links"
