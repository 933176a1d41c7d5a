"""The job's ``task.boundary`` and ``task.noise_sigma: auto``: defaults by mode, the job hash, refusals before any
work, and per-image σ estimates reaching the sampler, the baseline and the metric rows."""

import numpy as np
import pytest
import torch

from diffpir_core.metrics import float_to_uint8
from diffpir_core.operators import Blur, add_noise, gaussian_kernel
from diffpir_core.runs.batches import inputs_as_given
from diffpir_core.runs.job import JobError, parse_job
from diffpir_core.runs.scoring import score_images
from diffpir_core.task_kinds import task_kind
from diffpir_core.task_kinds.base import GivenData

MINIMAL = {"input": "/data/photos", "output": "/runs/photos"}


def _job(mode: str, **task):
    return parse_job({**MINIMAL, "mode": mode, "task": {"kind": "deblur", "kernel": "/k.npy", **task}})


def test_boundary_defaults_by_mode() -> None:
    assert parse_job({**MINIMAL, "task": {"kind": "deblur"}}).task.boundary == "circular"
    assert _job("restore").task.boundary == "reflect"
    assert _job("restore", boundary="circular").task.boundary == "circular"
    assert parse_job({**MINIMAL, "mode": "restore", "task": {"kind": "sr", "scale": 2}}).task.boundary == "reflect"


def test_circular_jobs_keep_their_hash_and_reflect_changes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffpir_core.task_kinds.deblur.file_digest", lambda uri, options: "sha256:kernel")
    evaluate = parse_job({**MINIMAL, "task": {"kind": "deblur"}})
    assert "boundary" not in evaluate.task_identity()  # the identity of jobs from before the field
    assert parse_job({**MINIMAL, "task": {"kind": "deblur", "boundary": "circular"}}).job_hash() == evaluate.job_hash()
    reflect = parse_job({**MINIMAL, "task": {"kind": "deblur", "boundary": "reflect"}})
    assert reflect.task_identity()["boundary"] == "reflect" and reflect.job_hash() != evaluate.job_hash()
    assert _job("restore").job_hash() != _job("restore", boundary="circular").job_hash()


def test_ddrm_refuses_a_non_circular_boundary_naming_the_field() -> None:
    with pytest.raises(JobError, match=r"method: DDRM .*boundary 'circular'.*task\.boundary"):
        parse_job({**MINIMAL, "method": "ddrm", "task": {"kind": "deblur", "boundary": "reflect"}})
    with pytest.raises(JobError, match="task.boundary"):
        parse_job({**MINIMAL, "mode": "restore", "method": "ddrm", "task": {"kind": "sr", "scale": 2}})
    assert _job("restore", boundary="circular").method == "diffpir"
    parse_job(
        {**MINIMAL, "mode": "restore", "method": "ddrm", "task": {"kind": "sr", "scale": 2, "boundary": "circular"}}
    )
    with pytest.raises(JobError, match="task.boundary: Input should be 'circular' or 'reflect'"):
        parse_job({**MINIMAL, "task": {"kind": "deblur", "boundary": "wrap"}})


def test_auto_sigma_is_for_restore_mode() -> None:
    with pytest.raises(JobError, match="task.noise_sigma: auto"):
        parse_job({**MINIMAL, "task": {"kind": "deblur", "noise_sigma": "auto"}})
    job = _job("restore", noise_sigma="auto")
    assert job.task.title() == "deblur file, σ=auto" and job.sampler_config().noise_sigma == 0.0


def test_auto_sigma_estimates_reach_the_sampler_baseline_and_rows() -> None:
    rng = np.random.default_rng(0)
    smooth = torch.from_numpy(rng.random((2, 3, 64, 64))).float()
    kernel = gaussian_kernel(9, 2.0)
    blurred = Blur(kernel, boundary="reflect").A(Blur(kernel, boundary="reflect").A(smooth))
    sigmas = [0.02, 0.05]
    degraded = float_to_uint8(add_noise(blurred, sigmas, seed=[1, 2]))
    task = task_kind("deblur")(kernel="k.npy", noise_sigma="auto", boundary="reflect")
    inputs = inputs_as_given(task, ["a", "b"], degraded, {}, GivenData({"kernel": kernel}))
    assert inputs.noise_sigma is not None and np.allclose(inputs.noise_sigma, sigmas, rtol=0.1)
    rows = score_images(task, inputs, degraded, None, ["consistency"])
    assert [row["noise_sigma"] for row in rows] == inputs.noise_sigma
    fixed = task_kind("deblur")(kernel="k.npy", noise_sigma=0.02, boundary="reflect")
    by_estimate = task.baseline(inputs.y, inputs.params, inputs.noise_sigma)
    assert torch.equal(by_estimate[:1], fixed.baseline(inputs.y[:1], inputs.params, [inputs.noise_sigma[0]]))
    assert not torch.equal(by_estimate[1:], fixed.baseline(inputs.y[1:], inputs.params))
