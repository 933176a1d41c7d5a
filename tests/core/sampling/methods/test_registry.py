"""The method registry: names derived from it, uniform configs, the task's noise level, up-front operator checks,
presets on the task kinds, the prior card layer for every method, and one resolution of a job's sampler."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
from torch import nn

from diffpir_core.operators import NoSVDError, SuperResolution
from diffpir_core.runs.cells import Variant
from diffpir_core.sampling import (
    METHODS,
    DDRMConfig,
    DiffPIRConfig,
    DPSConfig,
    MethodName,
    check_operator,
    check_overrides,
    method_config,
    resolve_job_sampler,
    restore_with,
)
from diffpir_core.task_kinds import TASK_KINDS, task_kind

DOCS = Path(__file__).resolve().parents[4] / "docs" / "methods.md"


def test_method_names_come_from_the_registry():
    assert typing.get_args(MethodName) == tuple(METHODS)
    assert typing.get_args(Variant.model_fields["method"].annotation) == (MethodName, type(None))
    assert not set(METHODS) & set(TASK_KINDS)  # a card's sampler.<name> is a method or (DiffPIR's) a kind


def test_every_method_has_a_sampler_config_and_costs():
    nfes = {name: method.nfes(method.config()) for name, method in METHODS.items()}
    assert nfes == {"diffpir": 100, "dps": 1000, "ddrm": 20, "dpir": 8}
    assert {name for name, method in METHODS.items() if method.requires_svd} == {"ddrm"}
    assert {name: method.backward_passes(method.config()) for name, method in METHODS.items()} == {
        "diffpir": 0,
        "dps": 1000,
        "ddrm": 0,
        "dpir": 0,
    }
    assert METHODS["dps"].config is DPSConfig and callable(METHODS["dps"].sample)


def test_every_method_is_documented():
    table = DOCS.read_text()
    for name, method in METHODS.items():
        assert f"`{method.sample.__name__}`" in table and f"`{method.config.__name__}`" in table, name


@pytest.mark.parametrize("kind", list(TASK_KINDS))
def test_every_preset_is_a_valid_setting_of_its_method(kind):
    presets = task_kind(kind).PRESETS
    assert set(presets) <= set(METHODS) and "diffpir" in presets
    for method, settings in presets.items():
        assert check_overrides(method, settings, field=f"{kind}.PRESETS.{method}") == dict(settings)


def test_method_config_puts_the_task_noise_where_it_is_used():
    assert method_config("ddrm", {"timesteps": 10}, noise_sigma=0.05) == DDRMConfig(timesteps=10, noise_sigma=0.05)
    assert method_config("diffpir", noise_sigma=[0.0, 0.1]).noise_sigma == [0.0, 0.1]
    assert method_config("dps", noise_sigma=0.05) == DPSConfig()  # DPS's update never uses σ
    with pytest.raises(ValueError, match="task's noise_sigma"):
        method_config("dpir", {"noise_sigma": 0.2}, noise_sigma=0.1)
    with pytest.raises(ValueError, match=f"unknown method 'ddim': choose one of {', '.join(METHODS)}"):
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


def test_every_method_takes_the_prior_card_layer(tmp_path: Path):
    """A card's ``sampler.<method>.<kind>`` is a layer for that method; its ``sampler.<kind>`` (no method level)
    is DiffPIR's, for cards written before methods had sections."""
    prior = str(tmp_path / "mine.safetensors")
    sr = task_kind("sr")()
    (tmp_path / "mine.json").write_text(
        '{"sampler": {"dps": {"sr": {"num_steps": 50}}, "dpir": {"deblur": {"x8": false}}, "sr": {"zeta": 0.5}}}'
    )
    dps = resolve_job_sampler(sr, "dps", prior, {})
    assert (dps.config.scale, dps.config.num_steps) == (0.3, 50)
    assert dps.sources == {"scale": "task preset", "num_steps": f"prior card ({prior})", "variance": "default"}
    assert (dps.nfes, dps.backward_passes, dps.method) == (50, 50, "dps")
    assert resolve_job_sampler(sr, "dpir", prior, {}).config.iter_num == 24  # the card says nothing on dpir sr
    old_shape = resolve_job_sampler(sr, "diffpir", prior, {"iter_num": 10})
    assert (old_shape.config.zeta, old_shape.sources["zeta"], old_shape.config.iter_num) == (
        0.5,
        f"prior card ({prior})",
        10,
    )
    (tmp_path / "mine.json").write_text(
        '{"sampler": {"diffpir": {"sr": {"zeta": 0.6}}, "ddrm": {"sr": {"eta": 0.5}}}}'
    )
    assert resolve_job_sampler(sr, "diffpir", prior, {}).config.zeta == 0.6
    assert resolve_job_sampler(sr, "ddrm", prior, {}).config.eta == 0.5
    (tmp_path / "mine.json").write_text('{"sampler": {"dps": {"sr": 3}}}')
    with pytest.raises(ValueError, match=r"non-mapping sampler\.dps\.sr"):
        resolve_job_sampler(sr, "dps", prior, {})
