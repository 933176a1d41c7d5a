"""Uncertainty pictures: heatmaps on one scale, the colour bar, the row, the coverage table and the error plot."""

import io

import numpy as np
import pytest
from PIL import Image

from diffpir_core.reporting.uncertainty import (
    GAP,
    UNCALIBRATED,
    colour_bar_rgb,
    coverage_table_markdown,
    error_vs_std_png,
    heatmap_rgb,
    shared_vmax,
    uncertainty_caption,
    uncertainty_row,
)
from diffpir_core.uncertainty import coverage_summary


def test_one_value_is_one_colour_across_images() -> None:
    first = np.full((4, 5), 0.02)
    second = np.zeros((6, 3, 3))
    second[2, 1] = 0.02
    a, b = heatmap_rgb(first, 0.05), heatmap_rgb(second, 0.05)
    assert a.shape == (4, 5, 3) and a.dtype == np.uint8 and b.shape == (6, 3, 3)
    assert (a[0, 0] == b[2, 1]).all()  # (H, W, 3) maps average channels: 0.02 in each channel is 0.02
    assert not (a[0, 0] == b[0, 0]).all()
    assert (heatmap_rgb(np.array([[0.05, 9.0]]), 0.05)[0, 0] == heatmap_rgb(np.array([[9.0]]), 0.05)[0, 0]).all()
    # the map runs dark to bright: a perceptual ramp, monotone in lightness
    ramp = heatmap_rgb(np.linspace(0, 1, 11)[None], 1.0)[0].astype(float) @ [0.299, 0.587, 0.114]
    assert (np.diff(ramp) > 0).all()
    with pytest.raises(ValueError, match="vmax"):
        heatmap_rgb(first, 0.0)


def test_shared_vmax_ignores_a_few_extreme_pixels() -> None:
    maps = [np.full((10, 10), 0.01), np.full((10, 10), 0.02)]
    maps[1][0, 0] = 5.0
    assert shared_vmax(maps) == pytest.approx(0.02)
    assert shared_vmax([np.zeros((2, 2))]) == pytest.approx(1 / 255)


def test_colour_bar_runs_from_zero_at_the_bottom_to_vmax_at_the_top() -> None:
    bar = colour_bar_rgb(0.08, 64, "std")
    assert bar.shape[0] == 64 and bar.dtype == np.uint8 and bar.shape[2] == 3
    column = bar[:, 5]
    assert (column[14] == heatmap_rgb(np.array([[0.08]]), 0.08)[0, 0]).all()  # the top of the ramp is vmax
    assert (column[64 - 7] == heatmap_rgb(np.array([[0.0]]), 0.08)[0, 0]).all()  # the bottom is 0
    assert (bar[:12] != 255).any() and (bar[14:, 18:] != 255).any()  # the label above, the tick values beside
    with pytest.raises(ValueError, match="32 px"):
        colour_bar_rgb(0.08, 16, "std")


def test_row_puts_the_panels_side_by_side_on_one_scale() -> None:
    rng = np.random.default_rng(0)
    estimate = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    degraded = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # SR x4: shown enlarged by whole pixels
    std = np.full((32, 32, 3), 0.03)
    error = np.full((32, 32, 3), 0.03)
    row = uncertainty_row(degraded, estimate, std, error, vmax=0.06)
    bar = colour_bar_rgb(0.06, 32, "std")
    assert row.shape == (32, 4 * 32 + bar.shape[1] + 4 * GAP, 3) and row.dtype == np.uint8
    assert (row[:, :32] == np.repeat(np.repeat(degraded, 4, axis=0), 4, axis=1)).all()
    assert (row[:, 32 + GAP : 64 + GAP] == estimate).all()
    std_panel, error_panel = row[:, 2 * (32 + GAP) : 3 * 32 + 2 * GAP], row[:, 3 * (32 + GAP) : 4 * 32 + 3 * GAP]
    assert (std_panel == error_panel).all()  # equal values, equal colours
    assert (row[:, -bar.shape[1] :] == bar).all()
    restore_mode = uncertainty_row(degraded, estimate, std, None, vmax=0.06)
    assert restore_mode.shape[1] == row.shape[1] - 32 - GAP
    with pytest.raises(ValueError, match="whole fraction"):
        uncertainty_row(degraded[:7], estimate, std, None, vmax=0.06)


def test_captions_say_calibrated_or_uncalibrated() -> None:
    assert UNCALIBRATED in uncertainty_caption(None)
    assert "not a confidence" in uncertainty_caption(None)
    calibrated = uncertainty_caption(2.5, alpha=0.1, delta=0.05)
    assert "q̂ = 2.5" in calibrated and "90%" in calibrated and "95%" in calibrated
    assert UNCALIBRATED not in calibrated
    with pytest.raises(ValueError, match="alpha and delta"):
        uncertainty_caption(2.5)


def test_coverage_table_states_target_and_measured() -> None:
    rng = np.random.default_rng(1)
    stds = [rng.uniform(0.01, 0.05, (3, 8, 8)) for _ in range(10)]
    errors = [np.abs(rng.normal(0, s)) for s in stds]
    summary = coverage_summary(errors, stds, 2.0, 0.1, 0.1, n_calibration=20)
    table = coverage_table_markdown(summary)
    lines = table.splitlines()
    assert lines[0] == "| quantity | target | measured |"
    assert (
        f"| ≥ 90.0 % (≤ {100 * (0.9 + 1 / 21):.1f} %) | {100 * summary['image_coverage']:.1f} % of 10 test" in lines[2]
    )
    assert f"| ≥ 90.0 % per covered image | {100 * summary['mean_pixel_coverage']:.1f} % |" in lines[3]
    assert f"{summary['mean_width']:.4f}" in lines[4]
    assert f"Pearson {summary['std_error_correlation']['pearson']:.3f}" in lines[5]


def test_error_plot_is_a_png() -> None:
    rng = np.random.default_rng(2)
    stds = [rng.uniform(0.01, 0.05, (3, 8, 8)) for _ in range(4)]
    errors = [np.abs(rng.normal(0, s)) for s in stds]
    png = error_vs_std_png(stds, errors, 1.8)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (480, 340)
    with pytest.raises(ValueError, match="same, non-empty"):
        error_vs_std_png([np.ones(3)], [np.ones(4)], 1.0)
