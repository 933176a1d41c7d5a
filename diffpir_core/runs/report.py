"""The report of a cell, ``write_job_report``: report files in the output (report.md/html/card, metrics.csv,
summary.json), FID,
the pictured images (samples, best and worst by gain, with the baseline recomputed for them), the shard
timeline from the records, and the UI pieces (sample strip, links that open in a browser).
``write_comparison_report``: the table of a comparison's variants × tasks with sweep plots and a sample grid."""

import re
from datetime import datetime
from typing import Any

import numpy as np

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.io.uris import join
from diffpir_core.metrics import (
    FIDStats,
    MetricUnavailable,
    fid_from_stats,
    load_inception,
    load_lpips,
    uint8_to_float,
)
from diffpir_core.metrics.convert import float_to_uint8
from diffpir_core.reporting import (
    Extremes,
    ImagePicks,
    ReportFacts,
    ReportSample,
    ShardTiming,
    file_links,
    links_markdown,
    markdown_strip,
    pick_images,
    write_report,
)
from diffpir_core.reporting.comparison import ComparisonEntry, SampleRow, comparison_markdown, write_comparison
from diffpir_core.reporting.text import key_settings
from diffpir_core.runs.done import read_checked
from diffpir_core.runs.job import Job
from diffpir_core.runs.measurements import measurement_inputs
from diffpir_core.runs.plan import JobPlan, comparison_folder, quarantined_images
from diffpir_core.runs.scoring import baseline_selected, degraded_psnr
from diffpir_core.runs.uncertainty_report import uncertainty_section


def artifact_key(job: Job, suffix: str, variant: str | None = None) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) naming the dataset, the variant if any, and the
    task."""
    raw = f"{job.dataset_name()}-{variant or ''}-{job.task_label()}-{suffix}".lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")


def _report_images(
    job: Job, plan: JobPlan, done: list[ShardRef], rows: list[dict[str, Any]], picks: ImagePicks
) -> dict[str, ReportSample]:
    """The picked images by id, read from the shards that hold one; the baseline is recomputed for those
    the metrics scored it on (the others show none: their kind scores it on a subset)."""
    wanted = set(picks.ids())
    scores = {row["id"]: row for row in rows if row["id"] in wanted}
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    images: dict[str, ReportSample] = {}
    for ref in done:
        indices = [i for i, image_id in enumerate(ref.ids) if image_id in wanted]
        if not indices:
            continue
        restored, _ = read_checked(out, ref, plan.restored_array)
        truth = source.read_images(ref) if job.mode == "evaluate" else None
        inputs = measurement_inputs(job, plan, source, out, ref).select(indices)
        fraction = job.task.baseline_fraction(*restored.shape[1:3], inputs.params)
        with_baseline = [k for k, image_id in enumerate(inputs.ids) if baseline_selected(image_id, fraction)]
        baselines: dict[int, np.ndarray] = {}
        if with_baseline:
            subset = inputs.select(with_baseline)
            baselines = dict(
                zip(
                    with_baseline,
                    float_to_uint8(job.task.baseline(subset.y, subset.params, subset.noise_sigma)),
                    strict=True,
                )
            )
        degraded = float_to_uint8(inputs.y)
        for k, i in enumerate(indices):
            image_id = ref.ids[i]
            images[image_id] = ReportSample(
                image_id,
                degraded[k],
                restored[i],
                None if truth is None else truth[i],
                baselines.get(k),
                scores.get(image_id, {}),
                job.task.unknown_region(inputs.params, k),
            )
    return images


def _timeline(job: Job, plan: JobPlan, done: list[ShardRef]) -> list[ShardTiming]:
    """Completion time and phase seconds of every scored shard, from its record (read in parallel)."""
    records = DatasetStore.open(plan.output_store, job.storage_options).read_records(done, plan.restored_array)
    return [
        ShardTiming(key, datetime.fromisoformat(record.written_at).timestamp(), record.timings)
        for key, record in records.items()
        if record.timings and record.written_at
    ]


def _fid(job: Job, plan: JobPlan, done: list[ShardRef]) -> float | MetricUnavailable | None:
    if "fid" not in job.effective_metrics():
        return None
    inception = load_inception(plan.device)
    if isinstance(inception, MetricUnavailable):
        return inception
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    restored, truth = FIDStats.empty(), FIDStats.empty()
    for ref in done:
        restored.update(inception(uint8_to_float(read_checked(out, ref, plan.restored_array)[0])))
        truth.update(inception(uint8_to_float(source.read_images(ref))))
    return fid_from_stats(restored, truth)


def _unavailable(job: Job, plan: JobPlan) -> list[MetricUnavailable]:
    """Why a requested per-image backbone metric has no values (the scorer is cached per process)."""
    if "lpips" not in job.effective_metrics():
        return []
    scorer = load_lpips(plan.device)
    return [scorer] if isinstance(scorer, MetricUnavailable) else []


def write_job_report(
    job: Job,
    plan: JobPlan,
    done: list[ShardRef],
    rows: list[dict[str, Any]],
    failed: dict[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    """Write the four report files into ``job.output``; returns their URIs and the summary."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    shown = [
        *done,
        *(ref for ref in source.shards() if ref.key in failed),
    ]  # a failed metrics phase keeps its quarantine
    records = out.read_records(shown, plan.restored_array)
    quarantined = quarantined_images(source, {key: record.quarantined for key, record in records.items()})
    info = ReportFacts(
        task=job.task.title(),
        dataset=job.dataset_name(),
        prior=job.prior,
        nfes=plan.sampler_settings().nfes * plan.samples,
        wall_seconds=wall_seconds,
        mode=job.mode,
        baseline=job.task.BASELINE,
        config={"job_hash": plan.job_hash, "model_sha256": plan.model_sha256, "method": job.method, **plan.sampler},
        fid=_fid(job, plan, done),
        unavailable=_unavailable(job, plan),
        failed=[{"shard": key, "error": str(reason)} for key, reason in sorted(failed.items())],
        quarantined=quarantined,
    )
    picks = pick_images(rows, job.report.samples, job.report.extremes)
    images = _report_images(job, plan, done, rows, picks)
    samples = [images[image_id] for image_id in picks.samples if image_id in images]
    extremes = None
    if picks.metric is not None:
        best, worst = ([images[i] for i in ids if i in images] for ids in (picks.best, picks.worst))
        extremes = Extremes(picks.metric, best, worst)
    files = write_report(
        plan.job_dir,
        rows,
        info,
        samples,
        extremes=extremes,
        timeline=_timeline(job, plan, done),
        storage_options=job.storage_options,
        sections=[] if job.uncertainty is None else [uncertainty_section(job, plan, done, samples)],
    )
    return {
        "uris": files.uris,
        "summary": files.summary,
        "strip": markdown_strip(samples, job.task.BASELINE),
        "links": links_markdown(file_links(files.uris, job.storage_options)),
    }


def _comparison_samples(job: Job, results: list[Any], count: int) -> list[SampleRow]:
    """The first ``count`` images of each task across its variants (degraded, one column per variant, truth)."""
    samples: list[SampleRow] = []
    for label in dict.fromkeys(result.cell.task for result in results):
        of_task = [result for result in results if result.cell.task == label]
        first = next((result for result in of_task if result.plan is not None and result.refs), None)
        if first is None or count == 0:
            continue
        source = DatasetStore.open(first.plan.input_store, job.storage_options)
        ref = first.refs[0]
        inputs = measurement_inputs(
            first.cell.job, first.plan, source, DatasetStore.open(first.plan.output_store, job.storage_options), ref
        )
        truth = source.read_images(ref) if job.mode == "evaluate" else None
        restored: dict[str, np.ndarray | None] = {}
        for result in of_task:
            done = result.plan is not None and ref.key in result.outcome.get("manifests", {})
            restored[result.cell.name] = (
                read_checked(
                    DatasetStore.open(result.plan.output_store, job.storage_options), ref, result.plan.restored_array
                )[0]
                if done
                else None
            )
        scores = {result.cell.name: {row["id"]: row.get("psnr") for row in result.rows} for result in of_task}
        degraded = float_to_uint8(inputs.y)
        for i, image_id in enumerate(ref.ids[:count]):
            samples.append(
                SampleRow(
                    label,
                    image_id,
                    degraded[i],
                    {name: None if image is None else image[i] for name, image in restored.items()},
                    None if truth is None else truth[i],
                    {name: by_id.get(image_id) for name, by_id in scores.items()},
                )
            )
    return samples


def _degraded_psnr(job: Job, results: list[Any]) -> dict[str, float]:
    """Per task, the mean PSNR of the degraded inputs (evaluate mode) over the shards of its first run."""
    means: dict[str, float] = {}
    for label in dict.fromkeys(result.cell.task for result in results):
        first = next(
            (r for r in results if r.cell.task == label and r.plan is not None and r.plan.measurement_prefix), None
        )
        if first is None:
            continue
        source = DatasetStore.open(first.plan.input_store, job.storage_options)
        out = DatasetStore.open(first.plan.output_store, job.storage_options)
        values = [
            value
            for ref in first.refs
            for value in degraded_psnr(
                first.cell.job.task,
                measurement_inputs(first.cell.job, first.plan, source, out, ref),
                source.read_images(ref),
            )
        ]
        if values:
            means[label] = float(np.mean(values))
    return means


def write_comparison_report(job: Job, results: list[Any], wall_seconds: float) -> dict[str, Any]:
    """Write the comparison's table, sweep plots and sample grid into ``<output>/comparisons/<hash>``; returns the
    URIs, the table rows and its markdown. ``results``: ``diffpir_core.runs.results.CellResult`` of every cell."""
    entries = [
        ComparisonEntry(
            result.cell.name,
            result.cell.task,
            result.cell.method,
            key_settings(result.plan.sampler) if result.plan else result.cell.settings,
            result.cell.swept,
            summary=result.summary,
            rows=result.rows,
            reason=result.cell.reason,
            backward_passes=result.plan.sampler_settings().backward_passes if result.plan else 0,
        )
        for result in results
    ]
    title = f"Method comparison on {job.dataset_name()} ({job.mode}, prior {job.prior})"
    intro = (
        f"{len({e.variant for e in entries})} variant(s) × {len({e.task for e in entries})} task(s) on the same "
        "measurements; "
        f"NFEs are network calls per image, s/image the sampler's seconds per image; wall time {wall_seconds:.0f} s."
    )
    uris, rows = write_comparison(
        join(job.output, comparison_folder(job.job_hash())),
        title,
        intro,
        entries,
        _degraded_psnr(job, results),
        _comparison_samples(job, results, min(job.report.samples, 4)),
        storage_options=job.storage_options,
    )
    return {
        "uris": uris,
        "table": rows,
        "markdown": comparison_markdown(rows),
        "links": links_markdown(file_links(uris, job.storage_options)),
    }
