"""DiffPIRConfig validation and serialisation, and the task presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from diffpir_core.sampling import DiffPIRConfig
from diffpir_core.task_kinds import task_kind, task_preset


def test_reference_keyword_names_and_defaults():
    config = DiffPIRConfig(
        lambda_=2.0, zeta=0.25, eta=0.0, iter_num=10, skip_type="quad", t_start=999, noise_sigma=0.05
    )
    assert (config.guidance_scale, config.iter_num_U, config.return_mode) == (1.0, 1, "x_t0")
    assert (config.data_step_dtype, config.reference_noise) == ("float32", True)


def test_yaml_round_trip_with_per_image_sigma():
    config = DiffPIRConfig(noise_sigma=torch.tensor([0.05, 0.0, 0.1]), return_mode="x0_hat")
    assert config.noise_sigma == [0.05, 0.0, 0.1]  # float64 values, not float32-rounded
    again = DiffPIRConfig(**yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert again == config


def test_noise_sigmas_per_batch():
    assert DiffPIRConfig(noise_sigma=0.05).noise_sigmas(3) == [0.05, 0.05, 0.05]
    assert DiffPIRConfig(noise_sigma=[0.01, 0.02]).noise_sigmas(2) == [0.01, 0.02]
    assert DiffPIRConfig(noise_sigma=np.array([0.01, 0.02])).noise_sigmas(2) == [0.01, 0.02]
    with pytest.raises(ValueError, match="one per image"):
        DiffPIRConfig(noise_sigma=[0.01, 0.02]).noise_sigmas(3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("zeta", 1.5, "less than or equal to 1"),
        ("lambda_", 0.0, "greater than 0"),
        ("iter_num", 0, "greater than or equal to 1"),
        ("skip_type", "linear", "'quad' or 'uniform'"),
        ("t_start", 1000, "less than or equal to 999"),
        ("noise_sigma", -0.1, "noise_sigma must be in"),
        ("noise_sigma", 12.75, "noise_sigma must be in"),
        ("noise_sigma", torch.zeros(2, 2), "one per image"),
        ("return_mode", "x0", "'x_t0' or 'x0_hat'"),
        ("unknown_option", 1, "Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_refused(field, value, message):
    with pytest.raises(ValidationError, match=message):
        DiffPIRConfig(**{field: value})


def test_presets_hold_the_reference_run_values():
    assert task_preset("deblur") == DiffPIRConfig(lambda_=7.0, zeta=0.3, iter_num=100, noise_sigma=0.05)
    assert task_preset("inpaint") == DiffPIRConfig(lambda_=1.0, zeta=1.0, iter_num=20, noise_sigma=0.0)
    sr = task_preset("sr")
    assert (sr.zeta, sr.iter_num, sr.noise_sigma) == (0.25, 100, 0.05)
    assert 2.0 <= sr.lambda_ <= 12.0  # chosen from the reference's sweep


def test_presets_are_overridable_and_read_only():
    assert task_preset("sr", lambda_=12.0, iter_num=20).lambda_ == 12.0
    with pytest.raises(ValidationError):
        task_preset("inpaint", zeta=2.0)
    with pytest.raises(TypeError):
        task_kind("sr").PRESETS["diffpir"]["lambda_"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        task_kind("sr").PRESETS["dps"] = {}  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown task kind 'colorize'"):
        task_preset("colorize")
