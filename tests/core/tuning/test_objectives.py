"""The tuning objectives: their aggregation over images and the jobs each refuses before any work."""

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from diffpir_core.metrics.perceptual import VGG16_FILE
from diffpir_core.runs.job import Job
from diffpir_core.tuning import OBJECTIVES, objective_problem


def test_the_objectives_read_their_metric_and_aggregate_by_the_mean() -> None:
    assert set(OBJECTIVES) == {"psnr", "ssim", "lpips", "discrepancy", "sure"}
    for name, objective in OBJECTIVES.items():
        assert objective.name == objective.metric == name
    assert OBJECTIVES["psnr"].direction == OBJECTIVES["ssim"].direction == "maximize"
    assert OBJECTIVES["lpips"].direction == OBJECTIVES["sure"].direction == "minimize"
    assert OBJECTIVES["discrepancy"].direction == "minimize"
    assert [name for name, o in OBJECTIVES.items() if o.needs_truth] == ["psnr", "ssim", "lpips"]
    assert OBJECTIVES["psnr"].value([20.0, 23.0, 29.0]) == pytest.approx(24.0)
    assert OBJECTIVES["sure"].value([1e-3, 3e-3]) == pytest.approx(2e-3)


def test_discrepancy_is_the_distance_of_the_mean_ratio_from_one() -> None:
    discrepancy = OBJECTIVES["discrepancy"]
    assert discrepancy.value([1.0, 1.0]) == 0.0
    assert discrepancy.value([0.5, 1.5]) == 0.0  # one setting for all images: over- and under-fits balance
    assert discrepancy.value([0.6, 0.8]) == pytest.approx(0.3)  # under-fitting noise (too small a residual) ...
    assert discrepancy.value([1.2, 1.4]) == pytest.approx(0.3)  # ... as bad as leaving as much signal in it


def test_an_unscored_image_gives_no_value_and_no_images_are_an_error() -> None:
    assert math.isnan(OBJECTIVES["psnr"].value([25.0, None]))
    assert math.isnan(OBJECTIVES["discrepancy"].value([1.0, math.nan]))
    assert OBJECTIVES["psnr"].value([25.0, math.inf]) == math.inf  # an exact restoration
    with pytest.raises(ValueError, match="objective sure: no per-image sure values"):
        OBJECTIVES["sure"].value([])


def test_ground_truth_objectives_are_refused_in_restore_mode(make_job: Callable[..., Job], tmp_path: Path) -> None:
    evaluate = make_job(tmp_path)
    restore = make_job(tmp_path, mode="restore")
    for name in ("psnr", "ssim"):
        assert objective_problem(name, evaluate) is None
        problem = objective_problem(name, restore)
        assert problem is not None and f"objective {name} needs ground truth" in problem
        assert "discrepancy or sure" in problem
    for name in ("discrepancy", "sure"):
        assert objective_problem(name, evaluate) is None
        assert objective_problem(name, restore) is None


def test_unknown_objectives_list_the_allowed_ones(make_job: Callable[..., Job], tmp_path: Path) -> None:
    problem = objective_problem("mse", make_job(tmp_path))
    assert problem == "unknown objective 'mse': choose one of psnr, ssim, lpips, discrepancy, sure"


@pytest.mark.parametrize("name", ["discrepancy", "sure"])
def test_noise_objectives_need_noise(name: str, make_job: Callable[..., Job], tmp_path: Path) -> None:
    inpaint = {"kind": "inpaint", "mask": "box", "noise_sigma": 0.0}
    problem = objective_problem(name, make_job(tmp_path, task=inpaint))
    assert problem is not None
    assert f"objective {name}: task.noise_sigma is 0 (inpaint-box)" in problem
    assert "tune on psnr with a mode evaluate job" in problem
    assert objective_problem(name, make_job(tmp_path, task={**inpaint, "noise_sigma": 0.01})) is None
    auto = make_job(tmp_path, mode="restore", task={"kind": "sr", "scale": 2, "noise_sigma": "auto"})
    assert objective_problem(name, auto) is None
    comparison = make_job(tmp_path, tasks=[{"kind": "sr", "scale": 2}, inpaint])
    problem = objective_problem(name, comparison)
    assert problem is not None and "tasks[1].noise_sigma is 0" in problem


def test_sure_needs_fp32(make_job: Callable[..., Job], tmp_path: Path) -> None:
    half = make_job(tmp_path, device="cuda", precision="bf16")
    problem = objective_problem("sure", half)
    assert problem is not None and "precision bf16" in problem and "use precision fp32" in problem
    assert objective_problem("discrepancy", half) is None


def test_lpips_is_refused_with_the_metric_message_when_it_cannot_run(
    make_job: Callable[..., Job], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    problem = objective_problem("lpips", make_job(tmp_path))
    assert problem is not None and problem.startswith("objective lpips: LPIPS unavailable: ")
    assert "torchvision" in problem or VGG16_FILE in problem
