"""The effective sampler settings of a job: task preset → prior card → the job's ``sampler:`` overrides.

``SamplerOverrides`` is ``DiffPIRConfig`` with every field optional (same types, bounds and
descriptions), so a job's ``sampler:`` section is validated field by field and a typo is a field
error; the noise level is the task's, never a sampler field. :func:`resolve_sampler` merges the three
layers and says where each value came from, for ``diffpir run --dry-run`` and the run records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, create_model, model_validator
from pydantic.fields import FieldInfo

from diffpir_core.sampling.config import DiffPIRConfig

_TASK_OWNED = ("noise_sigma",)


def _optional_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in DiffPIRConfig.model_fields.items():
        if name not in _TASK_OWNED:
            fields[name] = (info.annotation | None, FieldInfo.merge_field_infos(info, default=None))
    return fields


def _no_task_fields(cls: type, data: Any) -> Any:
    if isinstance(data, Mapping) and "noise_sigma" in data:
        raise ValueError("set the noise level with task.noise_sigma, not sampler.noise_sigma")
    return data


SamplerOverrides = create_model(
    "SamplerOverrides",
    __config__=ConfigDict(extra="forbid", frozen=True),
    __doc__="DiffPIRConfig fields a job overrides (unset = from the task preset or the prior's card).",
    __validators__={"_no_task_fields": model_validator(mode="before")(_no_task_fields)},
    **_optional_fields(),
)


@dataclass(frozen=True)
class ResolvedSampler:
    """The effective ``DiffPIRConfig`` and, per field, where its value came from."""

    config: DiffPIRConfig
    sources: dict[str, str]


def resolve_sampler(
    preset: Mapping[str, Any],
    card: Mapping[str, Any],
    overrides: Mapping[str, Any],
    noise_sigma: float,
    *,
    card_name: str = "prior card",
) -> ResolvedSampler:
    """Merge the layers (later wins) into a validated config; the noise level is the task's."""
    layers = [("task preset", preset), (card_name, card), ("job", overrides)]
    values: dict[str, Any] = {}
    sources = dict.fromkeys(DiffPIRConfig.model_fields, "default")
    for label, layer in layers:
        for key, value in layer.items():
            values[key] = value
            sources[key] = label
    values["noise_sigma"] = noise_sigma
    sources["noise_sigma"] = "task"
    return ResolvedSampler(DiffPIRConfig(**values), sources)
