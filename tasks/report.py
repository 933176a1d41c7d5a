"""``write_job_report``: report files in the output (report.md/html, metrics.csv, summary.json), FID, samples."""

import re
from typing import Any

from prefect import task

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.job import Job
from diffpir_core.metrics import (
    FIDStats,
    MetricUnavailable,
    fid_from_stats,
    load_inception,
    load_lpips,
    uint8_to_float,
)
from diffpir_core.metrics.convert import float_to_uint8
from diffpir_core.reporting import ReportSample, RunInfo, write_report
from tasks.errors import retry_transient
from tasks.measurements import measurement_inputs
from tasks.plan import RunPlan


def artifact_key(job: Job, suffix: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) naming the dataset and task."""
    raw = f"{job.dataset_name()}-{job.task_label()}-{suffix}".lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")


def _samples(job: Job, plan: RunPlan, done: list[ShardRef]) -> list[ReportSample]:
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    samples: list[ReportSample] = []
    for ref in done:
        if len(samples) >= job.report.samples:
            break
        restored = out.read_array(ref, plan.restored_array)
        degraded = float_to_uint8(measurement_inputs(job, plan, source, out, ref).y)
        truth = source.read_images(ref) if job.mode == "evaluate" else None
        for i, image_id in enumerate(ref.ids[: job.report.samples - len(samples)]):
            samples.append(ReportSample(image_id, degraded[i], restored[i], None if truth is None else truth[i]))
    return samples


def _fid(job: Job, plan: RunPlan, done: list[ShardRef]) -> float | MetricUnavailable | None:
    if "fid" not in job.effective_metrics():
        return None
    inception = load_inception(plan.device)
    if isinstance(inception, MetricUnavailable):
        return inception
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    restored, truth = FIDStats.empty(), FIDStats.empty()
    for ref in done:
        restored.update(inception(uint8_to_float(out.read_array(ref, plan.restored_array))))
        truth.update(inception(uint8_to_float(source.read_images(ref))))
    return fid_from_stats(restored, truth)


def _unavailable(job: Job, plan: RunPlan) -> list[MetricUnavailable]:
    """Why a requested per-image backbone metric has no values (the scorer is cached per process)."""
    if "lpips" not in job.effective_metrics():
        return []
    scorer = load_lpips(plan.device)
    return [scorer] if isinstance(scorer, MetricUnavailable) else []


@task(name="report", retry_condition_fn=retry_transient)
def write_job_report(
    job: Job, plan: RunPlan, done: list[ShardRef], rows: list[dict[str, Any]], failed: dict[str, str], wall_seconds: float
) -> dict[str, Any]:
    """Write the four report files into ``job.output``; returns their URIs and the summary."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    quarantined = [{"id": q.id, "error": q.reason} for q in source.quarantine()]
    info = RunInfo(
        task=job.task.title(),
        dataset=job.dataset_name(),
        prior=job.prior,
        nfes=job.sampler_config().nfes,
        wall_seconds=wall_seconds,
        mode=job.mode,
        config={"job_hash": plan.job_hash, "model_sha256": plan.model_sha256, **job.sampler_config().model_dump(mode="json")},
        fid=_fid(job, plan, done),
        unavailable=_unavailable(job, plan),
        failed=[{"shard": key, "error": reason} for key, reason in sorted(failed.items())],
        quarantined=quarantined,
    )
    files = write_report(
        plan.job_dir, rows, info, _samples(job, plan, done), storage_options=job.storage_options
    )
    return {"uris": files.uris, "summary": files.summary}

