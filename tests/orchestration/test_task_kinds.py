"""Every task kind of the registry against one contract, and end to end through the restore flow.

Adding a task kind = one module in ``diffpir_core/task_kinds/`` plus one line in ``EXAMPLES`` below;
``test_every_registered_kind_has_an_example`` fails until that line exists.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from diffpir_core.io import DatasetStore
from diffpir_core.metrics import psnr, uint8_to_float
from diffpir_core.runs.batches import inputs_from_arrays
from diffpir_core.runs.plan import read_plans
from diffpir_core.task_kinds import TASK_KINDS, TaskKind, TaskSpec
from diffpir_flow.flows.run import run

EXAMPLES: list[dict[str, Any]] = [
    {"kind": "sr", "scale": 2, "noise_sigma": 0.05},
    {"kind": "deblur", "kernel": "gaussian", "kernel_size": 7, "noise_sigma": 0.05},
    {"kind": "inpaint", "mask": "random", "mask_ratio": 0.5},
    {"kind": "denoise", "noise_sigma": 0.1},
]
IDS = [f"example_{kind['kind']}" for kind in EXAMPLES]


def _task(example: dict[str, Any], **changes: Any) -> TaskKind:
    return TypeAdapter(TaskSpec).validate_python({**example, **changes})


def _truth(count: int = 2, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((count, 3, 4, 4))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def test_every_registered_kind_has_an_example() -> None:
    assert sorted(e["kind"] for e in EXAMPLES) == sorted(TASK_KINDS)
    assert len({_task(e).label() for e in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_synthesised_measurements_match_their_declared_arrays_and_seeds(example: dict[str, Any]) -> None:
    task, truth = _task(example), _truth()
    arrays = task.synthesise(truth, [1, 2], {})
    declared = task.measurement_arrays(32, 32, {})
    assert sorted(arrays) == sorted(declared)
    for name, (shape, dtype) in declared.items():
        assert arrays[name].shape == (2, *shape) and arrays[name].dtype == np.dtype(dtype), name
    again = task.synthesise(truth, [1, 2], {})
    other = task.synthesise(truth, [3, 4], {})
    assert all(np.array_equal(arrays[n], again[n]) for n in arrays)  # seeded per image
    assert not np.array_equal(arrays["y"], other["y"])  # other seeds: other noise, kernel or mask
    first_alone = task.synthesise(truth[:1], [1], {})
    assert np.array_equal(first_alone["y"][0], arrays["y"][0])  # independent of the batch


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_operator_reproduces_the_noise_free_measurement(example: dict[str, Any]) -> None:
    task, truth = _task(example, noise_sigma=0.01 if example["kind"] == "denoise" else 0.0), _truth()
    inputs = inputs_from_arrays(task, ["a", "b"], task.synthesise(truth, [5, 6], {}))
    predicted = task.operator(inputs.params).A(uint8_to_float(truth))
    assert predicted.shape == inputs.y.shape
    assert inputs.y.shape[-1] * task.output_scale == truth.shape[2]
    border = 4 * task.output_scale  # the SR data-step kernel fits bicubic downscaling away from the border
    error = (predicted - inputs.y)[
        ...,
        border // task.output_scale : -border // task.output_scale or None,
        border // task.output_scale : -border // task.output_scale or None,
    ].abs()
    assert error.mean() < 0.02, float(error.mean())


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_baseline_restores_the_measurement_to_full_size(example: dict[str, Any]) -> None:
    task, truth = _task(example), _truth()
    inputs = inputs_from_arrays(task, ["a", "b"], task.synthesise(truth, [5, 6], {}))
    baseline = task.baseline(inputs.y, inputs.params)
    assert baseline.shape == (2, 3, 32, 32) and 0.0 <= float(baseline.min()) and float(baseline.max()) <= 1.0
    restored = np.atleast_1d(psnr((baseline * 255).round().byte().permute(0, 2, 3, 1).numpy(), truth))
    assert (restored > 20.0).all(), (task.BASELINE, restored)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_each_kind_runs_end_to_end_through_the_restore_flow(
    example: dict[str, Any], make_job, image_writer, tmp_path: Path
) -> None:
    images = image_writer(tmp_path / "images", 4)
    job = make_job(tmp_path / "images", tmp_path / "out", task=example, metrics=["psnr", "consistency"])
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    plan = read_plans(str(tmp_path / "out"), {})[0]
    out = DatasetStore.open(plan.output_store)
    restored = {
        i: px for ref in out.shards() for i, px in zip(ref.ids, out.read_array(ref, plan.restored_array), strict=True)
    }
    assert sorted(restored) == sorted(images)
    assert all(px.shape == images[i].shape for i, px in restored.items())
    summary = (Path(plan.job_dir) / "summary.json").read_text()
    assert job.task.title() in (Path(plan.job_dir) / "report.md").read_text()
    assert '"nfes": 3' in summary and '"measurement_rms"' in summary
