"""Work units overlap on the local runner: the next unit starts (task run, first read) while one computes, yet no more
units than ``runner.max_workers`` run the model at once, and the pixels do not depend on the dispatch."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from diffpir_core.runs import priors
from diffpir_core.runs.read import read_restored
from diffpir_flow.flows.run import run


class ForwardMeter:
    """Wraps a prior's forward: each call takes at least ``seconds`` and the most calls in flight at once is kept."""

    def __init__(self, forward: Any, seconds: float) -> None:
        self.forward, self.seconds = forward, seconds
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.seconds)
            return self.forward(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def metered(tiny_prior: Path) -> Iterator[ForwardMeter]:
    """The process-wide prior of the test jobs, its forward metered (and restored afterwards)."""
    prior = priors.get_prior(str(tiny_prior), priors.prior_sha256(str(tiny_prior)), "cpu")
    meter = ForwardMeter(prior.unet.forward, 0.05)
    prior.unet.forward = meter
    try:
        yield meter
    finally:
        del prior.unet.forward  # the instance attribute goes, the class's forward is back


def _unit_runs(state: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [state.state_details.flow_run_id]})
        )
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id for run in subflows]}))
    return sorted((run for run in runs if run.name.startswith("restore-")), key=lambda run: run.start_time)


def test_units_overlap_but_only_max_workers_compute_at_once(
    make_job, images_8: Path, tmp_path: Path, metered: ForwardMeter
) -> None:
    one_slot = {
        "shard_size": 2,
        "batch_size": 2,
        "runner": {"kind": "local", "max_workers": 1},
        "dispatch": {"unit_shards": 1},
    }
    state = run(job=make_job(images_8, tmp_path / "overlap", **one_slot), return_state=True)
    assert state.is_completed(), state.message
    assert metered.most == 1  # one model slot: never two units in the network at once
    units = _unit_runs(state)
    assert len(units) == 4
    overlaps = sum(later.start_time < earlier.end_time for earlier, later in zip(units, units[1:], strict=False))
    assert overlaps >= 2  # each next unit had started before the one computing ended

    metered.most = 0
    serial = run(
        job=make_job(images_8, tmp_path / "serial", **{**one_slot, "dispatch": {"unit_shards": 4, "window": 1}}),
        return_state=True,
    )
    assert serial.is_completed(), serial.message
    assert len(_unit_runs(serial)) == 1 and metered.most == 1
    np.testing.assert_equal(read_restored(str(tmp_path / "overlap")), read_restored(str(tmp_path / "serial")))


def test_two_model_slots_compute_two_units_at_once(
    make_job, images_8: Path, tmp_path: Path, metered: ForwardMeter
) -> None:
    two_slots = {
        "shard_size": 2,
        "batch_size": 2,
        "runner": {"kind": "local", "max_workers": 2},
        "dispatch": {"unit_shards": 1},
    }
    state = run(job=make_job(images_8, tmp_path / "out", **two_slots), return_state=True)
    assert state.is_completed(), state.message
    assert metered.most == 2
