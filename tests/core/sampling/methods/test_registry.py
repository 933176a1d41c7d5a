"""The method registry: uniform configs, the task's noise level, up-front operator checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffpir_core.operators import NoSVDError, SuperResolution
from diffpir_core.sampling import METHODS, DDRMConfig, DiffPIRConfig, DPSConfig, check_operator, method_config, restore_with


def test_every_method_has_a_sampler_config_and_costs():
    assert list(METHODS) == ["diffpir", "dps", "ddrm", "dpir"]
    nfes = {name: method.config().nfes for name, method in METHODS.items()}
    assert nfes == {"diffpir": 100, "dps": 1000, "ddrm": 20, "dpir": 8}
    assert {name for name, method in METHODS.items() if method.config.requires_svd} == {"ddrm"}
    sample, config_type = METHODS["dps"]
    assert config_type is DPSConfig and callable(sample)


def test_method_config_puts_the_task_noise_where_it_is_used():
    assert method_config("ddrm", {"timesteps": 10}, noise_sigma=0.05) == DDRMConfig(timesteps=10, noise_sigma=0.05)
    assert method_config("diffpir", noise_sigma=[0.0, 0.1]).noise_sigma == [0.0, 0.1]
    assert method_config("dps", noise_sigma=0.05) == DPSConfig()  # DPS's update never uses σ
    with pytest.raises(ValueError, match="task's noise_sigma"):
        method_config("dpir", {"noise_sigma": 0.2}, noise_sigma=0.1)
    with pytest.raises(ValueError, match="unknown method 'ddim': choose one of diffpir, dps, ddrm, dpir"):
        method_config("ddim")


class MustNotRun(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the network ran")


def test_operator_and_config_are_checked_before_any_network_call():
    cubic = SuperResolution(2, mode="cubic")
    check_operator("diffpir", cubic)
    with pytest.raises(NoSVDError, match="DDRM needs"):
        check_operator("ddrm", cubic)
    with pytest.raises(NoSVDError):
        restore_with("ddrm", MustNotRun(), cubic, torch.rand(1, 3, 8, 8), DDRMConfig())
    with pytest.raises(TypeError, match="method 'dps' takes a DPSConfig, got a DiffPIRConfig"):
        restore_with("dps", MustNotRun(), cubic, torch.rand(1, 3, 8, 8), DiffPIRConfig())
