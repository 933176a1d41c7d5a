"""A pytest plugin that registers a throwaway fifth method, ``one_step``, before collection (for
``test_contract.py::test_a_fifth_method_is_under_the_contract``): x_t at a fixed t from the initial estimate, one
network call, the clean estimate as the result."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffpir_core import sampling
from diffpir_core.operators import Operator
from diffpir_core.sampling import common, methods
from diffpir_core.sampling.diffpir import reference_schedule


class OneStepConfig(BaseModel):
    """The one step's timestep."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    t: int = Field(200, ge=0, le=999)

    @property
    def nfes(self) -> int:
        return 1


def one_step_sample(
    model: nn.Module,
    operator: Operator,
    y: torch.Tensor,
    config: OneStepConfig,
    *,
    x_T: torch.Tensor | None = None,
    generator: common.GeneratorArg = None,
    callback: common.StepCallback | None = None,
) -> torch.Tensor:
    y = common.as_image_batch(y)
    predictor = common.as_predictor(model)
    noise = common.NoiseSource(generator, y.shape[0], y.device)
    init = operator.init_image(y)
    if x_T is not None and x_T.shape != init.shape:
        raise ValueError(f"x_T must have the shape of the restored batch {tuple(init.shape)} (diffusion space)")
    schedule = reference_schedule()
    a, b = schedule.sqrt_alphas_cumprod[config.t], schedule.sqrt_one_minus_alphas_cumprod[config.t]
    x = a * (2 * init - 1) + b * noise.draw(init.shape) if x_T is None else x_T
    with torch.no_grad():
        x0 = predictor(x, common.timestep_batch(config.t, x))
    if callback is not None:
        callback(common.Step(0, config.t, x0, x0, x0))
    return x0 / 2 + 0.5


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    registry = MappingProxyType({**methods.METHODS, "one_step": methods.Method(one_step_sample, OneStepConfig)})
    methods.METHODS = registry
    sampling.METHODS = registry
