"""The ``tune:`` section of a job: which settings of the method to search, over which ranges, for how many trials,
on which images (no Optuna, no Prefect: the job model imports this module).

Each parameter is a field of the job's method config (``sampling.methods``), given a range (``low``/``high``,
optionally ``log``) or a list of ``choices``; :func:`check_space` checks the names and the range ends against the
config before any work, naming the field and what it allows.
"""

from __future__ import annotations

import hashlib
import itertools
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffpir_core.sampling import allowed_settings, check_overrides, get_method, method_config
from diffpir_core.tuning.objectives import OBJECTIVES, objective_problem


class ParamRange(BaseModel):
    """The values one setting may take in the search: a range ``low``..``high`` (``log``: sampled on a log scale)
    or a list of ``choices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (and log), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got low {self.low}, high {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: needs low > 0 (got low {self.low})")
        return self


class Subset(BaseModel):
    """The images every trial restores: ``count`` images chosen by a hash of their ids (the same ones in every run,
    whatever the order of the input), or the listed ``ids``. The others are held out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int | None = Field(None, ge=2, le=10_000)
    ids: list[str] | None = Field(None, min_length=2)

    @model_validator(mode="after")
    def _one_kind(self) -> Subset:
        if (self.count is None) == (self.ids is None):
            raise ValueError("give count (images picked by a hash of their ids) or ids (a list), one of them")
        return self

    def size(self) -> int:
        """How many images the subset holds."""
        return self.count if self.count is not None else len(self.ids or [])

    def pick(self, ids: Sequence[str]) -> list[str]:
        """The subset of ``ids`` (every image of the input), in a stable order: the first ones form the first stage.
        Raises ``ValueError`` naming listed ids the input lacks, or when the input has too few images."""
        if self.ids is not None:
            missing = sorted(set(self.ids) - set(ids))
            if missing:
                raise ValueError(
                    f"tune.subset.ids: {len(missing)} id(s) not in the input: {missing[:5]}; the input has e.g. "
                    f"{sorted(ids)[:5]}"
                )
            return list(dict.fromkeys(self.ids))
        count = self.count or 0
        if len(ids) < count:
            raise ValueError(f"tune.subset.count: {count} images asked for, the input has {len(ids)}; lower the count")
        return sorted(ids, key=lambda image_id: hashlib.sha256(f"tune:{image_id}".encode()).hexdigest())[:count]


class TuneSpec(BaseModel):
    """A tuning job (``tune:``): search ``params`` for ``trials`` trials with Optuna's TPE sampler (seeded) on the
    ``subset``, each trial scored by ``objective``; ``prune``: stop a trial whose first images score below the
    median of the trials so far."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    params: dict[str, ParamRange] = Field(
        min_length=1, description="setting -> {low, high, log} or {choices}: settings of the job's method"
    )
    trials: int = Field(20, ge=1, le=10_000, description="trials to run (a re-run adds those still missing)")
    objective: str | None = Field(
        None, description="psnr | ssim | lpips (evaluate; psnr by default) | discrepancy | sure (restore, no truth)"
    )
    subset: Subset = Field(default_factory=lambda: Subset(count=8))
    prune: bool = Field(True, description="stop poor trials after their first images (median pruning)")
    first_stage: int | None = Field(
        None, ge=1, description="images of the first stage (the pruning point); null = a quarter of the subset"
    )
    seed: int = Field(0, ge=0, description="seed of the search (the restoration's seed is the job's)")

    def stages(self, size: int) -> list[int]:
        """How many images each stage of a trial restores: a first stage (the pruning point), then the rest."""
        first = min(self.first_stage or max(1, size // 4), size)
        return [first, size - first] if first < size else [size]


def check_space(method: str, params: Mapping[str, ParamRange]) -> None:
    """Each parameter is a setting of ``method``'s config with a range or choices it allows; raises ``ValueError`` with
    one line per problem, each naming ``tune.params.<name>`` and what the setting allows."""
    allowed = allowed_settings(method)
    problems = []
    fields = get_method(method).config.model_fields
    for name, spec in params.items():
        where = f"tune.params.{name}"
        if name not in allowed:
            problems.append(f"{where}: not a setting of method {method}; allowed: {', '.join(allowed)}")
            continue
        annotation = fields[name].annotation
        if spec.choices is None and annotation not in (int, float):
            options = typing.get_args(annotation) or (True, False)
            problems.append(f"{where}: {name} is not a number; give choices, e.g. choices: {list(options)}")
            continue
        if spec.choices is None and annotation is int and not (spec.low or 0).is_integer():
            problems.append(f"{where}: {name} is a whole number; low and high must be whole (got {spec.low})")
            continue
        for value in spec.choices if spec.choices is not None else [spec.low, spec.high]:
            try:
                check_overrides(method, {name: value}, field="tune.params")
            except ValueError as err:
                problems.append(str(err))
    if problems:
        raise ValueError("\n".join(problems))


def is_int(method: str, name: str) -> bool:
    """Whether setting ``name`` of ``method`` is a whole number (searched with whole values)."""
    return get_method(method).config.model_fields[name].annotation is int


def most_nfes(method: str, base: Mapping[str, Any], params: Mapping[str, ParamRange], noise_sigma: float) -> int:
    """The most network evaluations per image a trial can take: the method's NFE count over every corner of the
    space (each parameter at its low/high end or at each of its choices) on top of the ``base`` settings."""
    corners = [spec.choices if spec.choices is not None else [spec.low, spec.high] for spec in params.values()]
    most = 0
    for point in itertools.product(*corners):
        values = {**base, **{name: _typed(method, name, v) for name, v in zip(params, point, strict=True)}}
        most = max(most, get_method(method).nfes(method_config(method, values, noise_sigma=noise_sigma)))
    return most


def _typed(method: str, name: str, value: Any) -> Any:
    return int(value) if is_int(method, name) and isinstance(value, float) else value


def objective_name(tune: TuneSpec, mode: str) -> str | None:
    """The objective a tuning job scores trials by: its ``objective``, else PSNR in evaluate mode (restore mode has
    no default: it has no ground truth, and which blind objective fits depends on the task)."""
    return tune.objective or ("psnr" if mode == "evaluate" else None)


def tune_of(job: Any) -> TuneSpec:
    """The ``tune:`` section of a tuning job (a :class:`~diffpir_core.runs.job.Job`); a job without one is a
    programming error here."""
    if job.tune is None:
        raise ValueError("not a tuning job: it has no tune: section")
    return job.tune


def tune_problem(job: Any) -> str | None:
    """Why ``job`` (a :class:`~diffpir_core.runs.job.Job` with ``tune``) cannot be tuned, checked before any work:
    a comparison, a parameter that is no setting of the method or a range it does not allow, an objective that
    cannot apply (restore mode has no ground truth for PSNR). None when it can."""
    if job.is_comparison():
        return "tune: a tuning job searches one method on one task; drop variants and tasks"
    try:
        check_space(job.method, job.tune.params)
    except ValueError as err:
        return str(err)
    name = objective_name(job.tune, job.mode)
    if name is None:
        return f"tune.objective: mode restore has no ground truth; give one of {', '.join(_blind(OBJECTIVES))}"
    if problem := objective_problem(name, job):
        return f"tune.objective: {problem}"
    return None


def _blind(objectives: Mapping[str, Any]) -> list[str]:
    return [name for name, objective in objectives.items() if not objective.needs_truth]
