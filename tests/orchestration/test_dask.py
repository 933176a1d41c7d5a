"""Shard tasks on a real Dask LocalCluster (loopback, worker processes with GPU=1 resources)."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from diffpir_core.runs.read import read_restored
from diffpir_flow.flows.run import run


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[LocalCluster]:
    """Two worker processes, one thread each, each advertising the resource GPU=1."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        resources={"GPU": 1},
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster


def test_dask_runner_restores_on_workers_like_the_local_runner(
    gpu_cluster: LocalCluster, make_job, images_8: Path, tmp_path: Path
) -> None:
    runner = {"kind": "dask", "address": gpu_cluster.scheduler_address, "gpus_per_task": 1}
    dask_job = make_job(images_8, tmp_path / "dask", runner=runner)
    state = run(job=dask_job, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["restored"] == 2
    with get_client(sync_client=True) as client:  # the workers reported to this server, not to one of their own
        (shards_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [state.state_details.flow_run_id]})
        )
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [shards_run.id]}))
    assert sorted((t.name, t.state.type.value) for t in task_runs) == [
        ("restore-32x32/000000", "COMPLETED"),
        ("restore-32x32/000001", "COMPLETED"),
    ]

    local_job = make_job(images_8, tmp_path / "local")
    assert run(job=local_job, return_state=True).is_completed()
    np.testing.assert_equal(read_restored(str(tmp_path / "dask")), read_restored(str(tmp_path / "local")))


def test_gpu_request_no_worker_can_take_fails_fast_with_a_clear_message(
    gpu_cluster: LocalCluster, make_job, images_8: Path, tmp_path: Path
) -> None:
    runner = {"kind": "dask", "address": gpu_cluster.scheduler_address, "gpus_per_task": 2, "gpu_wait_s": 1}
    job = make_job(images_8, tmp_path / "out", runner=runner)
    state = run(job=job, return_state=True)
    assert state.is_failed()
    assert "GPU=2" in state.message and "--resources GPU=1" in state.message
