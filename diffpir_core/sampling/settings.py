"""The effective sampler settings of a job: task preset → prior card → tuned file → the job's ``sampler:``.

A job's ``sampler:`` section holds settings of its method's config (``sampling.methods``), every one
optional: :func:`check_overrides` validates them field by field against that config (same types, bounds
and descriptions), so a typo or a setting of another method is an error naming the field and the allowed
ones; the noise level is the task's, never a sampler field. :func:`resolve_sampler` merges the layers and
says where each value came from, for ``diffpir run --dry-run`` and the run records.

The layers are the same for every method: the task kind's preset for the method (``TaskKind.PRESETS[method]``, the
values of the method's reference code for that kind), the prior card's recommendation
(``card.sampler.<method>.<kind>``;
a card's ``sampler.<kind>`` is DiffPIR's), the values of a tuned file the job names (``tuned:``), then the job's
settings. :func:`resolve_job_sampler` is the one place a
job's settings are resolved (it reads the prior card); its :class:`ResolvedSampler` is what the run layer keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from diffpir_core.models import recommended_sampler
from diffpir_core.sampling.methods import METHODS, get_method, method_config

if TYPE_CHECKING:
    from diffpir_core.task_kinds import TaskKind

_TASK_OWNED = ("noise_sigma",)


@cache
def overrides_model(method: str) -> type[BaseModel]:
    """Method ``method``'s config with every field optional (noise_sigma left out): what ``sampler:`` may set."""
    config = get_method(method).config
    fields: dict[str, Any] = {
        name: (info.annotation | None, FieldInfo.merge_field_infos(info, default=None))
        for name, info in config.model_fields.items()
        if name not in _TASK_OWNED
    }
    return create_model(
        f"{config.__name__}Overrides",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=f"{config.__name__} fields a job overrides (unset = from the method's preset or the prior's card).",
        **fields,
    )


def allowed_settings(method: str) -> list[str]:
    """The setting names a ``sampler:`` section of method ``method`` may hold."""
    return list(overrides_model(method).model_fields)


def check_overrides(method: str, overrides: Mapping[str, Any], field: str = "sampler") -> dict[str, Any]:
    """``overrides`` validated against method ``method``'s config; the set fields, normalised (e.g. 3 → 3.0).

    Raises ``ValueError`` with one line per problem, each naming ``<field>.<setting>``: an unknown setting (with the
    allowed ones), or a bad value."""
    if "noise_sigma" in overrides:
        raise ValueError(f"{field}: set the noise level with task.noise_sigma, not {field}.noise_sigma")
    allowed = allowed_settings(method)
    problems = []
    for name in (key for key in overrides if key not in allowed):
        others = [other for other in METHODS if other != method and name in allowed_settings(other)]
        hint = f" (a setting of {' / '.join(others)})" if others else ""
        problems.append(f"{field}.{name}: not a setting of method {method}{hint}; allowed: {', '.join(allowed)}")
    if problems:
        raise ValueError("\n".join(problems))
    try:
        return overrides_model(method).model_validate(dict(overrides)).model_dump(mode="json", exclude_none=True)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            got = "" if isinstance(e["input"], dict) else f" (got {e['input']!r})"
            lines.append(f"{field}.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}{got}")
        raise ValueError("\n".join(lines)) from None


@dataclass(frozen=True)
class ResolvedSampler:
    """The effective config of ``method`` and, per field, where its value came from."""

    config: BaseModel
    sources: dict[str, str]
    method: str

    @property
    def nfes(self) -> int:
        """Network evaluations per image."""
        return get_method(self.method).nfes(self.config)

    @property
    def backward_passes(self) -> int:
        """Backward passes through the network per image (0 but for methods that differentiate the network)."""
        return get_method(self.method).backward_passes(self.config)


def resolve_sampler(
    preset: Mapping[str, Any],
    card: Mapping[str, Any],
    overrides: Mapping[str, Any],
    noise_sigma: float,
    *,
    method: str,
    card_name: str = "prior card",
    tuned: tuple[str, Mapping[str, Any]] | None = None,
) -> ResolvedSampler:
    """Merge the layers (later wins) into a validated config of ``method``; the noise level is the task's.
    ``tuned``: (its label, e.g. ``tuned /path/tuned.json``, its values), a layer between the card and the job."""
    layers = [("task preset", preset), (card_name, card), *([tuned] if tuned else []), ("job", overrides)]
    values: dict[str, Any] = {}
    config_fields = get_method(method).config.model_fields
    sources = dict.fromkeys(config_fields, "default")
    for label, layer in layers:
        for key, value in layer.items():
            values[key] = value
            sources[key] = label
    config = method_config(method, values, noise_sigma=noise_sigma)
    if "noise_sigma" in config_fields:
        sources["noise_sigma"] = "task"
    return ResolvedSampler(config, sources, method)


def resolve_job_sampler(
    task: TaskKind,
    method: str,
    prior: str,
    overrides: Mapping[str, Any],
    tuned: tuple[str, Mapping[str, Any]] | None = None,
) -> ResolvedSampler:
    """The settings ``method`` samples ``task`` with on ``prior``: the kind's preset for the method → the prior card's
    recommendation (read here) → ``tuned`` (a tuned file's label and values, ``diffpir_core.tuning.tuned``) →
    ``overrides`` (a job's ``sampler:``), with the task's known noise level.

    The one resolution of a job's sampler: resolve it once where the job is planned and hand the result on, so that
    what runs is what the plan, the dry run and the records show."""
    return resolve_sampler(
        task.PRESETS.get(method, {}),
        recommended_sampler(prior, task.kind, method),
        overrides,
        task.known_sigma,
        method=method,
        card_name=f"prior card ({prior})",
        tuned=tuned,
    )
