"""Progress inside a shard: every sampler step and every finished image reach the flow's progress artifact, the
CLI's listeners and the task run's log (a shard of large photos used to show nothing for minutes)."""

import logging
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterId,
    FlowRunFilter,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker

from diffpir_core.models import load_prior
from diffpir_core.runs.batches import ShardInputs, restore_batchwise
from diffpir_core.runs.progress import ShardMeter, watching
from diffpir_flow.flows.progress import ShardProgress, listening
from diffpir_flow.flows.run import run


def test_the_meter_hears_every_step_and_logs_every_image(
    make_job, tiny_prior: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    job = make_job("/unused", task={"kind": "denoise", "noise_sigma": 0.05}, sampler={"iter_num": 3})
    ids = ["a.png", "b.png", "c.png"]
    heard: list[float] = []
    meter = ShardMeter("32x32/000000", ids, job.sampler_config().nfes, logging.getLogger("test.meter"), every_s=0.0)
    inputs = ShardInputs(ids, torch.rand(3, 3, 32, 32), {}, None)
    with watching(lambda shard, done: heard.append(done)), caplog.at_level(logging.INFO, logger="test.meter"):
        restore_batchwise(
            load_prior(str(tiny_prior)).unet,
            inputs,
            job.task,
            job.sampler_config(),
            seed=0,
            batch_size=2,
            device="cpu",
            meter=meter,
        )
    steps = job.sampler_config().nfes
    assert heard == sorted(heard) and heard[-1] == 3.0
    assert [round(d, 3) for d in heard[:steps]] == [
        round(2 * (i + 1) / steps, 3) for i in range(steps)
    ]  # the first batch, step by step
    assert len(heard) == 2 * steps + 2  # every step of both batches, and each batch's end
    lines = [r.getMessage() for r in caplog.records if r.name == "test.meter"]
    assert [line.split(" restored")[0] for line in lines] == [
        f"shard 32x32/000000: image {i + 1}/3 {n}" for i, n in enumerate(ids)
    ]


def test_the_artifact_and_listeners_follow_images_inside_a_shard() -> None:
    seen: list[float] = []

    @flow
    def advancing() -> str:
        progress = ShardProgress(1, "sr2 on photos", images=4, step_every_s=0.0)
        progress.on_step("32x32/000000", 1.5)
        return str(progress._artifact_id)

    with listening(lambda progress, item: seen.append(progress.images_now)):
        artifact_id = advancing()
    with get_client(sync_client=True) as client:
        (mine,) = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert mine.data == pytest.approx(37.5) and mine.description.startswith("1/4 images (0/1 shards)")
    assert seen == [0.0, 1.5]


def test_a_run_logs_each_finished_image(make_job, image_writer, tmp_path: Path) -> None:
    images = tmp_path / "images"
    image_writer(images, 4)
    heard: list[float] = []
    with watching(lambda shard, done: heard.append(done)):
        state = run(job=make_job(images, tmp_path / "out", shard_size=4, batch_size=2), return_state=True)
    assert state.is_completed(), state.message
    assert heard[-1] == 4.0 and 2.0 in heard  # each batch's end reached the flow's progress before the shard ended
    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        root = state.state_details.flow_run_id
        ids = [
            root,
            *(
                run.id
                for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [root]}))
            ),
        ]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
    finished = sorted(log.message.split(" restored")[0] for log in logs if " restored in " in log.message)
    assert finished == [f"shard 32x32/000000: image {i}/4 img00{i - 1}.png" for i in range(1, 5)], finished
