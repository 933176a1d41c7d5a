"""The restoration methods by name, with one uniform call: DiffPIR, DPS, DDRM and DPIR.

:data:`METHODS` is the one list of method names: the job's ``method`` field (:data:`MethodName`), the comparison
variants, the prior card's ``sampler.<method>`` sections and the contract test over every method all derive from it.
Each entry is a :class:`Method`: the sampler, its config class, and what callers ask of a method (whether it needs
the operator's SVD, its network calls and backward passes per image). Every sampler takes ``(model, operator, y,
config, *, generator=None, callback=None)`` and returns the restored (B, 3, H, W) batch on the [0, 1] scale; every
config has ``nfes`` (network calls per image). The measurement's noise level belongs to the task:
:func:`method_config` puts it into the configs that use it (DPS does not). Presets per task kind live on the kinds
(``TaskKind.PRESETS[method]``). Adding a method: its module, one line in :data:`METHODS`, its section in
docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import nn

from diffpir_core.operators import Operator
from diffpir_core.sampling.common import GeneratorArg, StepCallback
from diffpir_core.sampling.config import DiffPIRConfig
from diffpir_core.sampling.ddrm import DDRMConfig, ddrm_sample, require_svd
from diffpir_core.sampling.diffpir import diffpir_sample
from diffpir_core.sampling.dpir import DPIRPnPConfig, dpir_pnp_sample
from diffpir_core.sampling.dps import DPSConfig, dps_sample

Sampler = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A restoration method: its sampler, its config class, and what callers ask of it."""

    sample: Sampler
    config: type[BaseModel]
    requires_svd: bool = False
    """Whether it needs the operator's singular value decomposition (:func:`check_operator` refuses one without)."""
    backward_passes_per_call: int = 0
    """Backward passes through the network per network call (DPS differentiates every call: 1)."""

    def nfes(self, config: BaseModel) -> int:
        """Network evaluations per image of a run with ``config`` (the config's own count, ``config.nfes``)."""
        return int(config.nfes)  # type: ignore[attr-defined]

    def backward_passes(self, config: BaseModel) -> int:
        """Backward passes through the network per image of a run with ``config`` (~2× a forward's cost each)."""
        return self.backward_passes_per_call * self.nfes(config)


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "diffpir": Method(diffpir_sample, DiffPIRConfig),
        "dps": Method(dps_sample, DPSConfig, backward_passes_per_call=1),
        "ddrm": Method(ddrm_sample, DDRMConfig, requires_svd=True),
        "dpir": Method(dpir_pnp_sample, DPIRPnPConfig),
    }
)
"""Method name -> :class:`Method`, in the order reports list them."""

MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
"""A method's name, as the job's ``method`` field and a variant's take it (one of :data:`METHODS`)."""


def get_method(name: str) -> Method:
    """The method called ``name``, or an error listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None


def method_config(
    name: str, settings: Mapping[str, Any] | None = None, *, noise_sigma: float | list[float] = 0.0
) -> BaseModel:
    """The validated config of method ``name`` from ``settings`` (e.g. a job's sampler section), with the
    task's ``noise_sigma`` where the method uses one; a ``noise_sigma`` among the settings is refused."""
    values = dict(settings or {})
    if "noise_sigma" in values:
        raise ValueError("set the noise level with the task's noise_sigma, not in the method settings")
    config_type = get_method(name).config
    if "noise_sigma" in config_type.model_fields:
        values["noise_sigma"] = noise_sigma
    return config_type(**values)


def check_operator(name: str, operator: Operator) -> None:
    """Refuse, before any image runs, an operator the method cannot use (DDRM without an SVD)."""
    if get_method(name).requires_svd:
        require_svd(operator, name.upper())


def restore_with(
    name: str,
    model: nn.Module,
    operator: Operator,
    y: torch.Tensor,
    config: BaseModel,
    *,
    generator: GeneratorArg = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run method ``name`` on the batch ``y``; ``config`` must be that method's config class."""
    method = get_method(name)
    if not isinstance(config, method.config):
        raise TypeError(f"method {name!r} takes a {method.config.__name__}, got a {type(config).__name__}")
    check_operator(name, operator)
    return method.sample(model, operator, y, config, generator=generator, callback=callback)
