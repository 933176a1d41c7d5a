"""Reports show the settings that ran in human labels, mark each task's best value, and sort sweeps by number."""

from diffpir_core.reporting.comparison import BEST_MARK, _notes, comparison_markdown
from diffpir_core.reporting.plots import _numeric_first
from diffpir_core.reporting.text import key_settings, settings_line


def _row(variant: str, psnr: float, lpips: float, task: str = "sr4") -> dict:
    return {
        "task": task,
        "variant": variant,
        "method": "diffpir",
        "settings": {"lambda_": "2", "zeta": "1", "iter_num": 20},
        "swept": {},
        "nfes": 20,
        "backward_passes": 0,
        "psnr": psnr,
        "ssim": 0.5,
        "lpips": lpips,
        "fid": None,
        "degraded_psnr": None,
        "baseline_psnr": 20.0,
        "seconds_per_image": 1.0,
        "images": 2,
        "status": "done",
        "reason": None,
    }


def test_settings_read_as_they_ran() -> None:
    config = {
        "method": "diffpir",
        "lambda_": 2.0,
        "zeta": 0.30000001,
        "iter_num": 20,
        "noise_sigma": 0.05,
        "skip_type": "quad",
    }
    assert key_settings(config) == {"lambda_": "2", "zeta": "0.3", "iter_num": "20"}
    assert settings_line(config) == "method diffpir · λ=2 · ζ=0.3 · steps=20"


def test_the_best_value_of_each_task_is_marked() -> None:
    table = comparison_markdown([_row("a", 24.0, 0.3), _row("b", 25.5, 0.4), _row("c", 23.0, 0.2, task="deblur")])
    lines = table.splitlines()[2:]
    assert f"25.50{BEST_MARK}" in lines[1] and f"0.3000{BEST_MARK}" in lines[0]  # higher PSNR, lower LPIPS
    assert BEST_MARK not in lines[2]  # a task with one variant has nothing to compare
    assert "λ=2, ζ=1, steps=20" in lines[0] and "lambda_" not in table


def test_sweep_values_sort_by_number() -> None:
    assert sorted(["16.0", 4, "1.0", "x"], key=_numeric_first) == ["1.0", 4, "16.0", "x"]


def test_dpir_on_holes_is_marked_with_the_reason() -> None:
    rows = [
        {**_row("dpir", 10.7, 0.5, task="inpaint-box"), "method": "dpir"},
        {**_row("dpir", 30.0, 0.1, task="inpaint-random"), "method": "dpir"},
        _row("diffpir", 28.0, 0.2, task="inpaint-box"),
    ]
    notes = _notes(rows)
    assert len(notes) == 1 and notes[0].startswith("dpir on inpaint-box: DPIR cannot fill large holes")


def test_the_zoomed_crop_lies_in_the_hole() -> None:
    """Restoration and baseline differ most in a measured corner (foliage), a little in the hole: the crop goes to the
    hole when the report knows it, to the corner when it does not."""
    import numpy as np

    from diffpir_core.reporting.images import crop_box

    restored = np.zeros((128, 128, 3), np.uint8)
    baseline = restored.copy()
    restored[:32, :32] = 200  # measured pixels that differ (a slightly different texture)
    restored[80:112, 80:112] = 30  # the hole, filled differently
    unknown = np.zeros((128, 128), bool)
    unknown[80:112, 80:112] = True
    assert crop_box(restored, baseline).top < 32
    box = crop_box(restored, baseline, unknown=unknown)
    assert 80 <= box.top < 112 and 80 <= box.left < 112
