"""SURE and the discrepancy ratio: the Monte-Carlo divergence against the exact trace of a linear estimator, SURE's
mean against the true risk, the probe's ε, the rows a job gets through the real sampler, and σ = 0 refused.

Every bound is a multiple of a standard error measured here (the spread over probes or noise draws), never a constant
fitted to one machine.
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffpir_core.io import DatasetStore
from diffpir_core.metrics import float_to_uint8, uint8_to_float
from diffpir_core.metrics.consistency import discrepancy, residual_power, sure
from diffpir_core.models import load_prior
from diffpir_core.operators import Operator
from diffpir_core.runs import priors
from diffpir_core.runs.batches import ShardInputs, inputs_from_arrays, restore_batch, synthesise
from diffpir_core.runs.done import read_checked
from diffpir_core.runs.job import Job, JobError, parse_job
from diffpir_core.runs.preflight import cost_lines
from diffpir_core.runs.prepare import ingest_input, plan_job
from diffpir_core.runs.probes import (
    EPSILON_PER_SIGMA,
    divergences,
    probe_direction,
    probe_divergence,
    probe_epsilon,
)
from diffpir_core.runs.scoring import score_shard
from diffpir_core.runs.unit import run_unit

SIGMA = 0.05
LINEAR_CASES = {  # a small image per task, so that the hat matrix's trace is computed column by column
    "deblur": ({"kind": "deblur", "kernel": "gaussian", "kernel_size": 5, "kernel_std": 1.0}, 12),
    "sr": ({"kind": "sr", "scale": 2}, 32),
}


def _operator(task: dict, size: int) -> tuple[Operator, torch.Tensor]:
    """The task's operator on one random ``size``² image, and that image (1, 3, size, size) in [0, 1]."""
    job = parse_job({"input": "x", "output": "y", "task": {**task, "noise_sigma": SIGMA}})
    truth = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    inputs = inputs_from_arrays(job.task, ["a"], synthesise(job.task, ["a"], truth, 0, {}))
    return job.task.operator(inputs.params), uint8_to_float(truth)


def _tikhonov(operator: Operator, size: int, tau: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """y -> x̂(y) = argmin ‖A x − y‖² + τ‖x − ½‖² (the operator's own closed-form data step): linear in y."""

    def restore(y: torch.Tensor) -> torch.Tensor:
        gray = torch.zeros(y.shape[0], 3, size, size, dtype=y.dtype)  # diffusion space: x = ½
        return (operator.prepare(y).prox(gray, tau) + 1) / 2

    return restore


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_the_monte_carlo_divergence_of_a_linear_estimator_is_its_exact_trace(case: str) -> None:
    """For x̂(y) linear, div_y A x̂ = trace(A H): the probe's estimate (float32, the probe's ε) over 32 probes is within
    4 standard errors of the trace computed column by column in float64."""
    task, size = LINEAR_CASES[case]
    operator, truth = _operator(task, size)
    restore = _tikhonov(operator, size, tau=0.1)

    def predict(y: torch.Tensor) -> torch.Tensor:
        return operator.A(restore(y))

    y = operator.A(truth)
    m = y.numel()
    base = predict(y.double())
    unit = torch.eye(m, dtype=torch.float64).view(m, *y.shape[1:])
    columns = torch.cat([predict(y.double() + unit[i : i + 64]) - base for i in range(0, m, 64)])
    trace = float(columns.flatten(1).diagonal().sum())
    assert 0.05 * m < trace < 0.95 * m  # a proper shrinkage, neither the identity nor nothing

    probes = torch.stack([probe_direction(k, "a", y.shape[1:]) for k in range(32)])
    epsilon = torch.full((32,), probe_epsilon(SIGMA))
    estimates = probe_divergence(predict, y.expand(32, -1, -1, -1), predict(y).expand(32, -1, -1, -1), probes, epsilon)
    estimates = estimates.numpy() * m
    error = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - trace) <= 4 * error, (estimates.mean(), trace, error)


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_sure_is_unbiased_for_the_prediction_risk_over_noise_draws(case: str) -> None:
    """y = A x + n, n ~ N(0, σ²): the mean of SURE − ‖A(x̂ − x)‖²/m over 64 draws (one probe each) is within 4 standard
    errors of 0, and that bound is far smaller than the divergence term SURE adds."""
    task, size = LINEAR_CASES[case]
    operator, truth = _operator(task, size)
    restore = _tikhonov(operator, size, tau=0.1)
    clean = operator.A(truth)
    generator = torch.Generator().manual_seed(1)
    differences, corrections = [], []
    for draw in range(64):
        y = clean + SIGMA * torch.randn(clean.shape, generator=generator)
        x_hat = restore(y)
        probe = probe_direction(draw, "a", y.shape[1:])[None]
        divergence = probe_divergence(
            lambda nudged: operator.A(restore(nudged)),
            y,
            operator.A(x_hat),
            probe,
            torch.tensor([probe_epsilon(SIGMA)]),
        ).numpy()
        estimate = sure(residual_power(operator, x_hat, y), [SIGMA], divergence)
        risk = residual_power(operator, x_hat, clean)
        differences.append(float(estimate[0] - risk[0]))
        corrections.append(float(2 * SIGMA**2 * divergence[0]))
    error = np.std(differences, ddof=1) / math.sqrt(len(differences))
    assert abs(np.mean(differences)) <= 4 * error, (np.mean(differences), error)
    assert 4 * error < 0.25 * np.mean(corrections)  # the test could tell SURE without its divergence


def test_the_probe_nudge_is_in_the_linear_range_of_the_sampler(tiny_prior: Path, image_writer, tmp_path: Path) -> None:
    """Through the real sampler: the divergence at the probe's ε and at ε/2 (same probes, same seeds). ε is large
    enough that the noise of float32 arithmetic in the estimate (from their paired differences) stays below the
    probes' own Monte-Carlo variance, and small enough for A x̂ to be linear over it: the two agree on average within
    4 paired standard errors."""
    images = image_writer(tmp_path / "img", 2)
    ids = sorted(images)
    job = parse_job({"input": "x", "output": "y", "task": {"kind": "sr", "scale": 2, "noise_sigma": SIGMA}})
    config = job.sampler_config().model_copy(update={"iter_num": 4})
    inputs = inputs_from_arrays(job.task, ids, synthesise(job.task, ids, np.stack([images[i] for i in ids]), 0, {}))
    unet = load_prior(str(tiny_prior)).unet
    operator = job.task.operator(inputs.params)

    def predict(y: torch.Tensor) -> torch.Tensor:
        restored = restore_batch(unet, ShardInputs(ids, y, inputs.params), job.task, config, seed=0, device="cpu")
        return operator.A(restored.detach().clamp(0, 1))

    prediction = predict(inputs.y)
    epsilon = torch.full((len(ids),), probe_epsilon(SIGMA))
    at_epsilon, at_half = [], []
    for k in range(8):
        probes = torch.stack([probe_direction(k, image_id, inputs.y.shape[1:]) for image_id in ids])
        at_epsilon.append(probe_divergence(predict, inputs.y, prediction, probes, epsilon).numpy())
        at_half.append(probe_divergence(predict, inputs.y, prediction, probes, epsilon / 2).numpy())
    at_epsilon, at_half = np.array(at_epsilon), np.array(at_half)
    spread = at_epsilon.var(axis=0, ddof=1)  # the probes' Monte-Carlo variance plus the arithmetic's noise at ε
    paired = (at_epsilon - at_half).var(axis=0, ddof=1)
    arithmetic = paired / 5  # noise f/ε at ε and 2f'/ε at ε/2, independent: the paired variance is 5× that at ε
    assert np.all(arithmetic < spread - arithmetic), (arithmetic, spread, EPSILON_PER_SIGMA)
    bias = np.abs((at_epsilon - at_half).mean(axis=0))
    assert np.all(bias <= 4 * np.sqrt(paired / len(at_epsilon))), (bias, paired, EPSILON_PER_SIGMA)


def test_the_probe_restores_with_the_images_own_seeds(tiny_prior: Path, image_writer, tmp_path: Path) -> None:
    """Common random numbers: the shard step's divergence (one image per batch) is the probe of the sampler restoring
    the nudged measurement with the job's own per-image seeds, against the stored (uint8) restoration; a second run
    with other seeds would add its own sampler noise / ε to every estimate."""
    images = image_writer(tmp_path / "img", 2, seed=5)
    ids = sorted(images)
    task = {"kind": "deblur", "kernel": "gaussian", "kernel_size": 7, "kernel_std": 1.6, "noise_sigma": SIGMA}
    job = parse_job({"input": "x", "output": "y", "task": task, "seed": 3, "sampler": {"iter_num": 4}})
    config = job.sampler_config()
    inputs = inputs_from_arrays(job.task, ids, synthesise(job.task, ids, np.stack([images[i] for i in ids]), 3, {}))
    unet = load_prior(str(tiny_prior)).unet
    operator = job.task.operator(inputs.params)
    restored = restore_batch(unet, inputs, job.task, config, seed=3, device="cpu").detach()
    stored = float_to_uint8(restored)

    def predict(y: torch.Tensor) -> torch.Tensor:
        nudged = restore_batch(unet, ShardInputs(ids, y, inputs.params), job.task, config, seed=3, device="cpu")
        return operator.A(nudged.detach().clamp(0, 1))

    probes = torch.stack([probe_direction(3, image_id, inputs.y.shape[1:]) for image_id in ids])
    epsilon = torch.full((2,), probe_epsilon(SIGMA))
    expected = probe_divergence(predict, inputs.y, operator.A(uint8_to_float(stored)), probes, epsilon).numpy()
    found = divergences(job, unet, inputs, stored, config, batch_size=1, device="cpu")
    np.testing.assert_allclose([found[image_id] for image_id in ids], expected, rtol=1e-3)


def _rows(job: Job) -> tuple[list[dict], list]:
    """Restore ``job`` in this process (one work unit): its rows and shards."""
    plan = plan_job(job, ingest_input(job)["store"])
    refs = DatasetStore.open(plan.output_store).shards()
    priors.configure_process(job, 1)
    outcome = run_unit(job, plan, refs)
    return [row for ref in refs for row in outcome["manifests"][ref.key]["rows"]], [plan, refs]


def test_sure_and_discrepancy_rows_rank_settings_as_the_true_error_does(
    make_job: Callable[..., Job], image_writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real sampler (tiny prior, deblurring, evaluate mode): every row has a finite ``sure``,
    ``discrepancy`` and ``prediction_error``; the mean SURE of a setting that ignores the data (λ tiny) and of the
    preset rank as their true error does; each row's SURE is its residual and the divergence its shard's record keeps;
    the metrics phase, re-scoring from the store, gets the same SURE. (Unbiasedness needs many noise draws: the linear
    test above.)"""
    monkeypatch.setattr(priors, "_SLOTS", priors._SLOTS)
    monkeypatch.setattr(priors, "_THREADS", priors._THREADS)
    image_writer(tmp_path / "img", 4, seed=3)
    task = {"kind": "deblur", "kernel": "gaussian", "kernel_size": 7, "kernel_std": 1.6, "noise_sigma": SIGMA}
    means = {}
    for lam in (1e-3, 7.0):
        job = make_job(
            tmp_path / "img",
            tmp_path / f"out-{lam}",
            task=task,
            sampler={"iter_num": 4, "lambda_": lam},
            metrics=["psnr", "consistency", "sure", "discrepancy"],
        )
        rows, (plan, refs) = _rows(job)
        assert len(rows) == 4
        for row in rows:
            for column in ("sure", "discrepancy", "prediction_error", "baseline_discrepancy"):
                assert isinstance(row[column], float) and math.isfinite(row[column]), (column, row)
            assert "baseline_sure" not in row
        means[lam] = {column: np.mean([row[column] for row in rows]) for column in ("sure", "prediction_error")}
        out = DatasetStore.open(plan.output_store)
        divergence = {
            k: v
            for ref in refs
            for k, v in read_checked(out, ref, plan.restored_array)[1].metrics["divergence"].items()
        }
        for row in rows:  # SURE from the row's own residual and the probe's divergence kept in the shard's record
            expected = row["measurement_rms"] ** 2 - SIGMA**2 + 2 * SIGMA**2 * divergence[row["id"]]
            assert row["sure"] == pytest.approx(expected, rel=1e-9), (row, divergence)
        rescored = [row for ref in refs for row in score_shard(job, plan, ref)]
        assert [row["sure"] for row in rescored] == [row["sure"] for row in rows]
    assert (means[1e-3]["sure"] > means[7.0]["sure"]) == (
        means[1e-3]["prediction_error"] > means[7.0]["prediction_error"]
    )
    gap = abs(means[1e-3]["prediction_error"] - means[7.0]["prediction_error"])
    assert gap > 0.5 * max(m["prediction_error"] for m in means.values())  # the settings differ strongly


def test_discrepancy_and_sure_formulas_on_known_numbers() -> None:
    power = np.array([0.0025, 0.005, 0.001])
    np.testing.assert_allclose(discrepancy(power, [0.05, 0.05, 0.0]), [1.0, 2.0, np.nan])
    np.testing.assert_allclose(sure(power, [0.05] * 3, np.array([0.5, 0.0, 0.2])), [0.0025, 0.0025, -0.0005])


@pytest.mark.parametrize("metric", ["sure", "discrepancy"])
def test_a_job_asking_for_noise_metrics_without_noise_is_refused(
    metric: str, tiny_prior: Path, tmp_path: Path
) -> None:
    data = {
        "input": str(tmp_path),
        "output": str(tmp_path / "out"),
        "prior": str(tiny_prior),
        "task": {"kind": "inpaint", "mask": "box", "noise_sigma": 0.0},
        "metrics": ["psnr", metric],
    }
    with pytest.raises(JobError, match=rf"metrics: {metric}: task.noise_sigma is 0 \(inpaint-box\)"):
        parse_job(data)
    assert parse_job({**data, "task": {**data["task"], "noise_sigma": 0.02}}).metrics == ["psnr", metric]


def test_the_dry_run_cost_counts_the_probe(make_job: Callable[..., Job], tmp_path: Path) -> None:
    job = make_job(tmp_path, sampler={"iter_num": 20})
    (plain,) = cost_lines(job, [(32, 32)])
    (probed,) = cost_lines(job.model_copy(update={"metrics": ["psnr", "sure"]}), [(32, 32)])
    assert plain.startswith("cost: 20 network calls per image x"), plain
    assert probed.startswith("cost: 40 network calls per image (2 restorations: sure) x"), probed
