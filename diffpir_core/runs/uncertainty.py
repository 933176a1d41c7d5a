"""Posterior samples in the run layer: a job with ``uncertainty`` restores every image K times (sample k draws its
noise from ``sample_seed(seed, id, k)``, sample 0 is the plain job's restoration), keeps each sample as an array of
its own with records (``samples/<k>``), and stores the estimate (``restored``: the mean of the K, or sample 0) and the
per-pixel standard deviation (``std``). Evaluate mode fits the conformal scale on the calibration split and measures
it on the other images; restore mode takes a fitted calibration file, or labels its maps "uncalibrated"
(docs/uncertainty.md). No Prefect here.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.io.uris import join
from diffpir_core.runs.batches import ShardInputs
from diffpir_core.runs.done import STD_ARRAY, read_checked, sample_array, sample_identity
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan
from diffpir_core.uncertainty.calibration import (
    Calibration,
    calibration_mismatch,
    calibration_split,
    coverage_summary,
    fit_scale,
    image_score,
    load_calibration,
    required_calibration_images,
    write_calibration,
)

STD_DTYPE = "float16"
"""The std array's dtype: on the [0, 1] pixel scale, 11 significant bits (a std of one 8-bit step keeps 3 digits)."""
CALIBRATION_FILE = "calibration.json"
UNCALIBRATED = "uncalibrated"
_OPERATOR_DATA = ("mask", "mask_ratio", "box_fraction")
"""Task fields a calibration ignores: where masks come from (synthesised in evaluate mode, files in restore mode). The
boundary counts: it changes the data step, so a calibration for restore mode's default ``reflect`` is fitted by an
evaluate job that sets ``task.boundary: reflect``."""


def by_sample(inputs: ShardInputs, rows: np.ndarray, count: int, scale: int) -> np.ndarray:
    """The rows :meth:`ShardInputs.replicated` restored (image-major, quarantined images left out) as
    (count samples, n images, H, W, 3), quarantined images' rows zero."""
    height, width = inputs.y.shape[-2:]
    out = np.zeros((count, len(inputs.ids), height * scale, width * scale, 3), np.uint8)
    kept = inputs.kept()
    if count and kept:
        out[:, kept] = rows.reshape(len(kept), count, *out.shape[2:]).swapaxes(0, 1)
    return out


def combine(samples_u8: np.ndarray, estimate: str) -> tuple[np.ndarray, np.ndarray]:
    """(estimate uint8, std :data:`STD_DTYPE`) of K stored samples (K, n, H, W, 3): the estimate is their mean
    (rounded to uint8) or sample 0; the std is the unbiased (K − 1) per-pixel, per-channel standard deviation on the
    [0, 1] scale. Both come from the stored uint8 samples, so a job that raises K gets what a fresh run gets."""
    pixels = samples_u8.astype(np.float64) / 255.0
    chosen = pixels.mean(axis=0) if estimate == "mean" else pixels[0]
    std = pixels.std(axis=0, ddof=1)
    return np.clip(np.rint(chosen * 255.0), 0, 255).astype(np.uint8), std.astype(STD_DTYPE)


def write_samples(
    out: DatasetStore,
    plan: JobPlan,
    ref: ShardRef,
    identity: dict[str, str],
    computed: np.ndarray,
    have: list[int],
    estimate: str,
    metrics: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Write each newly ``computed`` sample (those of ``range(K)`` not in ``have``, in order) and its record (with
    ``metrics``: the quarantined images), read the ones the shard had (verified), and return (estimate uint8, std,
    the samples computed)."""
    missing = [k for k in range(plan.samples) if k not in have]
    samples: dict[int, np.ndarray] = {}
    for k, data in zip(missing, computed, strict=True):
        checksum = out.write_shard_output(ref, sample_array(k), data)
        out.write_record(
            ref, sample_array(k), checksum=checksum, identity=sample_identity(identity, k), metrics=metrics
        )
        samples[k] = data
    for k in have:
        record = out.read_record(ref, sample_array(k), sample_identity(identity, k))
        samples[k] = read_checked(out, ref, sample_array(k), record)[0]
    chosen, std = combine(np.stack([samples[k] for k in range(plan.samples)]), estimate)
    return chosen, std, missing


def calibration_identity(job: Job) -> dict[str, Any]:
    """What a calibration fitted on ``job`` is valid for (``Calibration.identity``): task (without where its masks
    come from, :data:`_OPERATOR_DATA`), prior, method, sampler settings, K, estimate, precision."""
    assert job.uncertainty is not None
    task = {key: value for key, value in job.task_identity().items() if key not in _OPERATOR_DATA}
    return {
        "task": task,
        "prior": job.prior,
        "method": job.method,
        "sampler": job.sampler_config().model_dump(mode="json"),
        "samples": job.uncertainty.samples,
        "estimate": job.uncertainty.estimate,
        "precision": job.precision,
    }


def check_calibration(job: Job) -> Calibration | None:
    """The calibration file a restore-mode job names, loaded and checked against the job before any work; a
    ``ValueError`` naming the file and every difference (task, prior, method, sampler settings, K, estimate) when
    it was fitted for another job. None when the job names none."""
    if job.uncertainty is None or job.uncertainty.calibration is None:
        return None
    path = job.uncertainty.calibration
    calibration = load_calibration(path, job.storage_options)
    if differences := calibration_mismatch(calibration, calibration_identity(job)):
        raise ValueError(
            f"uncertainty.calibration: {path} was fitted for another job; it differs in: {'; '.join(differences)}. "
            "Fit one with an evaluate-mode job of the same settings, or remove uncertainty.calibration "
            "(the maps are then labelled uncalibrated)"
        )
    return calibration


@dataclass
class ImageMaps:
    """One image's uncertainty: its std and (evaluate mode) |estimate − truth|, float32 on the [0, 1] scale."""

    std: np.ndarray
    abs_error: np.ndarray | None


def image_maps(job: Job, plan: JobPlan, refs: list[ShardRef], ids: set[str] | None = None) -> dict[str, ImageMaps]:
    """Std and error maps of the restored images of ``refs`` (only ``ids`` when given), read verified."""
    source = DatasetStore.open(plan.input_store, job.storage_options)
    out = DatasetStore.open(plan.output_store, job.storage_options)
    maps: dict[str, ImageMaps] = {}
    for ref in refs:
        wanted = [i for i, image_id in enumerate(ref.ids) if ids is None or image_id in ids]
        if not wanted:
            continue
        estimate, record = read_checked(out, ref, plan.restored_array)
        std, _ = read_checked(out, ref, STD_ARRAY, out.read_record(ref, STD_ARRAY, record.identity))
        truth = source.read_images(ref) if job.mode == "evaluate" else None
        for i in wanted:
            if ref.ids[i] in record.quarantined:
                continue
            error = None
            if truth is not None:
                error = np.abs(estimate[i].astype(np.float32) - truth[i].astype(np.float32)) / 255.0
            maps[ref.ids[i]] = ImageMaps(std[i].astype(np.float32), error)
    return maps


def coverage(
    job: Job, plan: JobPlan, done: list[ShardRef], maps: dict[str, ImageMaps] | None = None
) -> dict[str, Any]:
    """The ``coverage`` entry of a job's summary. Evaluate mode: the scale q̂ fitted on the calibration split (written
    to ``<job folder>/calibration.json``) and measured on the other images; too few calibration images is said, with
    how many are needed. Restore mode: the calibration file's scale, or ``calibrated: false`` (maps uncalibrated).
    ``maps``: evaluate mode's :func:`image_maps` of ``done`` when the caller has read them already."""
    options = job.uncertainty
    assert options is not None
    entry: dict[str, Any] = {"samples": options.samples, "estimate": options.estimate, "alpha": options.alpha}
    entry["delta"] = options.delta
    if job.mode == "restore":
        calibration = check_calibration(job)
        if calibration is None:
            return {**entry, "calibrated": False, "label": UNCALIBRATED}
        return {
            **entry,
            "alpha": calibration.alpha,  # the promise is the calibration's, whatever the restore job's alpha, delta
            "delta": calibration.delta,
            "calibrated": True,
            "scale": calibration.scale,
            "n_calibration": calibration.n_calibration,
            "calibration_file": options.calibration,
        }
    maps = image_maps(job, plan, done) if maps is None else maps
    split = {i: in_calibration(job, i) for i in maps}
    scores = [image_score(m.abs_error, m.std, options.alpha) for i, m in maps.items() if split[i]]
    tests = [m for i, m in maps.items() if not split[i]]
    entry.update(n_calibration=len(scores), n_test=len(tests), calibration_fraction=options.calibration_fraction)
    try:
        scale = fit_scale(scores, options.delta)
    except ValueError:
        needed = required_calibration_images(options.delta)
        return {
            **entry,
            "calibrated": False,
            "label": UNCALIBRATED,
            "problem": f"too few calibration images to calibrate the std: {len(scores)}, where delta={options.delta} "
            f"needs at least {needed}; add images with ground truth, raise uncertainty.calibration_fraction or delta",
            "needed": needed,
        }
    uri = join(plan.job_dir, CALIBRATION_FILE)
    write_calibration(
        uri,
        Calibration(
            scale=scale,
            alpha=options.alpha,
            delta=options.delta,
            n_calibration=len(scores),
            **calibration_identity(job),
        ),
        job.storage_options,
    )
    entry.update(calibrated=True, scale=scale, calibration_file=uri)
    if not tests:
        return {**entry, "problem": "no test image outside the calibration split: nothing to measure coverage on"}
    measured = coverage_summary(
        [m.abs_error for m in tests],
        [m.std for m in tests],
        scale,
        options.alpha,
        options.delta,
        n_calibration=len(scores),
    )
    measured.pop("pixel_coverage")  # one value per image: metrics.csv's size, not the summary's
    covered = round(measured["image_coverage"] * len(tests))
    return {**entry, **measured, "covered_images": covered}


def in_calibration(job: Job, image_id: str) -> bool:
    """Whether evaluate mode fits the scale on ``image_id`` (else measures it there): a hash of (seed, id)."""
    assert job.uncertainty is not None
    return calibration_split(image_id, job.uncertainty.calibration_fraction, job.seed)


def coverage_sentence(entry: dict[str, Any]) -> str:
    """One sentence on the coverage, for the report and the Prefect artifact."""
    if entry.get("problem"):
        return f"Uncertainty: {entry['problem']}."
    if not entry.get("calibrated"):
        return (
            f"Uncertainty: std of {entry['samples']} posterior samples, uncalibrated (no calibration file): "
            "its size is not a confidence."
        )
    if "image_coverage" not in entry:
        return (
            f"Uncertainty: intervals estimate ± {entry['scale']:.3g}·std from {entry['calibration_file']} "
            f"({entry['n_calibration']} calibration images): at least {1 - entry['alpha']:.0%} of an image's pixels "
            f"inside with probability ≥ {1 - entry['delta']:.0%}."
        )
    return (
        f"Calibrated intervals covered ≥ {1 - entry['alpha']:.0%} of the pixels on {entry['covered_images']} of "
        f"{entry['n_test']} held-out images (target {1 - entry['delta']:.0%} of images; mean pixel coverage "
        f"{entry['mean_pixel_coverage']:.1%}, q̂ = {entry['scale']:.3g}, fitted on {entry['n_calibration']})."
    )
