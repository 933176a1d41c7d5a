"""Per-image rows with the task's classical baseline on the same measurement, and the gain over it."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffpir_core.metrics import float_to_uint8, measurement_rms, psnr, ssim, uint8_to_float
from diffpir_core.runs.batches import inputs_from_arrays, synthesise
from diffpir_core.runs.scoring import baseline_selected, gain, score_images
from diffpir_core.task_kinds import task_kind
from diffpir_core.task_kinds.baselines import bicubic_sr


def _smooth(count: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC)) for c in coarse])


def test_evaluate_rows_carry_the_baseline_metrics_and_the_gain() -> None:
    task = task_kind("sr")(scale=2, noise_sigma=0.05)
    truth = _smooth(3, 32)
    ids = ["a.png", "b.png", "c.png"]
    inputs = inputs_from_arrays(task, ids, synthesise(task, ids, truth, 0, {}))
    restored = np.clip(truth.astype(int) + np.arange(3)[:, None, None, None] * 6, 0, 255).astype(np.uint8)
    rows = score_images(task, inputs, restored, truth, ["psnr", "ssim"])
    baseline = float_to_uint8(bicubic_sr(inputs.y, 2))
    for i, row in enumerate(rows):
        assert row["psnr"] == pytest.approx(psnr(restored[i], truth[i], border=2))
        assert row["baseline_psnr"] == pytest.approx(psnr(baseline[i], truth[i], border=2))
        assert row["baseline_ssim"] == pytest.approx(ssim(baseline[i], truth[i], border=2))
        assert row["gain_psnr"] == row["psnr"] - row["baseline_psnr"]
        assert row["gain_ssim"] == row["ssim"] - row["baseline_ssim"]
    assert rows[0]["psnr"] == float("inf") and rows[0]["gain_psnr"] == float("inf")  # restored == truth
    assert 20 < rows[1]["baseline_psnr"] < 40 and rows[2]["gain_psnr"] < rows[1]["gain_psnr"]


def test_restore_rows_carry_both_consistencies_and_no_gain() -> None:
    task = task_kind("deblur")(kernel="gaussian", kernel_size=7, kernel_std=1.2, noise_sigma=0.05)
    truth = _smooth(2, 32)
    ids = ["a", "b"]
    inputs = inputs_from_arrays(task, ids, synthesise(task, ids, truth, 0, {}))
    rows = score_images(task, inputs, truth, None, ["consistency"])
    wiener = task.baseline(inputs.y, inputs.params)
    expected = measurement_rms(task.operator(inputs.params), uint8_to_float(float_to_uint8(wiener)), inputs.y)
    assert [set(row) for row in rows] == [{"measurement_rms", "baseline_measurement_rms"}] * 2
    for row, value in zip(rows, expected, strict=True):
        assert 0.03 < row["measurement_rms"] < 0.08  # the ground truth explains y up to the noise (σ = 0.05)
        assert row["baseline_measurement_rms"] == pytest.approx(value, rel=1e-12)


def test_baseline_subset_is_stable_and_bounded_for_large_inpainting_images() -> None:
    task = task_kind("inpaint")()

    def half_unknown(side: int, images: int = 2) -> dict:
        mask = torch.ones(images, 1, side, side)
        mask[:, :, : side // 2] = 0
        return {"mask": mask}

    assert (
        task.baseline_fraction(256, 256, half_unknown(256)) == 1.0
        and task.baseline_fraction(64, 64, half_unknown(64)) == 1.0
    )
    assert task.baseline_fraction(512, 512, half_unknown(512)) == pytest.approx(1 / 8)
    box = torch.ones(427, 640)
    box[150:250, 250:350] = (
        0  # a box hole in a photo: scored on every image (the rule used to look at the image's area)
    )
    assert task.baseline_fraction(427, 640, {"mask": box}) == 1.0
    assert task_kind("sr")().baseline_fraction(2048, 2048, {}) == 1.0
    ids = [f"img{i:05d}.png" for i in range(4000)]
    chosen = [image_id for image_id in ids if baseline_selected(image_id, 1 / 8)]
    assert 400 < len(chosen) < 600 and chosen == [i for i in ids if baseline_selected(i, 1 / 8)]
    assert all(baseline_selected(image_id, 1.0) for image_id in ids[:10])


def test_inputs_select_picks_per_image_parameters() -> None:
    task = task_kind("inpaint")(mask="random")
    truth = _smooth(3, 16)
    inputs = inputs_from_arrays(task, ["a", "b", "c"], synthesise(task, ["a", "b", "c"], truth, 0, {}))
    picked = inputs.select([2, 0])
    assert picked.ids == ["c", "a"]
    assert np.array_equal(picked.params["mask"].numpy(), inputs.params["mask"].numpy()[[2, 0]])
    assert np.array_equal(picked.y.numpy(), inputs.y.numpy()[[2, 0]])


def test_gain_signs_and_missing_values() -> None:
    assert gain("psnr", 25.0, 24.5) == 0.5 and gain("lpips", 0.2, 0.3) == pytest.approx(0.1)
    assert gain("psnr", None, 24.0) is None and gain("psnr", float("inf"), float("inf")) is None


def test_restore_rows_carry_blind_scores_of_the_input_the_baseline_and_the_restoration() -> None:
    """On a real photo (skimage's coffee, 256² crop) blurred with σ = 2 px and 5 % noise, the sharp photo itself (a
    perfect restoration) scores as more natural than its degraded input by both blind scores; the baseline's scores
    and the gains (baseline − restored: lower is better) sit beside them."""
    from skimage import data

    task = task_kind("deblur")(kernel="gaussian", kernel_size=13, kernel_std=2.0, noise_sigma=0.05)
    truth = data.coffee()[100:356, 200:456][None].copy()
    ids = ["coffee.png"]
    inputs = inputs_from_arrays(task, ids, synthesise(task, ids, truth, 0, {}))
    (row,) = score_images(task, inputs, truth, None, ["consistency", "piqe", "niqe"])
    for name in ("piqe", "niqe"):
        assert {name, f"degraded_{name}", f"baseline_{name}", f"gain_{name}"} <= set(row), sorted(row)
        assert row[f"degraded_{name}"] > row[name] + 1.0, (name, row)
        assert row[f"gain_{name}"] == pytest.approx(row[f"baseline_{name}"] - row[name])


def test_blind_scores_of_images_too_small_for_them_are_empty_not_an_error() -> None:
    task = task_kind("deblur")(kernel="gaussian", kernel_size=7, kernel_std=1.2, noise_sigma=0.05)
    truth = _smooth(2, 32)
    ids = ["a", "b"]
    inputs = inputs_from_arrays(task, ids, synthesise(task, ids, truth, 0, {}))
    rows = score_images(task, inputs, truth, None, ["piqe", "niqe"])
    assert all(row["piqe"] is not None and "niqe" not in row for row in rows)  # NIQE needs two 96x96 blocks
