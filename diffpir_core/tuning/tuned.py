"""The tuned settings file (``<output>/tuned.json``): the best settings a tuning job found, the objective they won
on, and the identity they are valid for (task and its fields, noise σ, prior, method).

A job names one with ``tuned: PATH``; its values are a layer of the job's sampler settings between the prior card
and the job's own ``sampler:`` (``sampling.settings``). :func:`tuned_layer` reads it and refuses a file made for
another task, noise level, prior or method, naming each difference (no Prefect here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from diffpir_core.io.uris import filesystem, put_atomic
from diffpir_core.task_kinds import TaskKind

TUNED_KIND = "diffpir-tuned-settings"


class TunedObjective(BaseModel):
    """What the settings won on: the objective, its direction and the best trial's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    direction: Literal["maximize", "minimize"]
    value: float


class ValidFor(BaseModel):
    """The identity a tuned file applies to: the task's fields (kernel and mask files by their digest), its noise
    level, the prior and the method."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: dict[str, Any]
    noise_sigma: float
    prior: str
    method: str


class TunedSettings(BaseModel):
    """A tuned settings file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["diffpir-tuned-settings"] = TUNED_KIND
    schema_version: Literal[1] = 1
    method: str
    sampler: dict[str, Any]
    objective: TunedObjective
    trials: int
    complete: int
    pruned: int
    best_trial: int
    valid_for: ValidFor
    subset: list[str]
    tuning: str  # the tuning's folder in its output (report, trials)

    def to_json(self) -> str:
        """The file's text."""
        return self.model_dump_json(indent=1)


def valid_for(task: TaskKind, task_identity: Mapping[str, Any], prior: str, method: str) -> ValidFor:
    """The identity a job's settings depend on (``task_identity``: the job's, kernel/mask files by digest)."""
    return ValidFor(task=dict(task_identity), noise_sigma=task.known_sigma, prior=prior, method=method)


def write_tuned(uri: str, tuned: TunedSettings, storage_options: Mapping[str, Any]) -> None:
    """Write the tuned file at ``uri`` atomically."""
    fs, path = filesystem(uri, dict(storage_options))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    put_atomic(fs, path, tuned.to_json().encode())


def read_tuned(uri: str, storage_options: Mapping[str, Any]) -> TunedSettings:
    """The tuned file at ``uri``; ``ValueError`` saying what is wrong with it (missing, not JSON, not a tuned file)."""
    fs, path = filesystem(uri, dict(storage_options))
    try:
        text = fs.cat_file(path)
    except FileNotFoundError:
        raise ValueError(
            f"{uri} does not exist; a tuning job writes one as <output>/tuned.json (docs/tuning.md)"
        ) from None
    try:
        return TunedSettings.model_validate(json.loads(text))
    except (ValueError, ValidationError) as err:
        first = str(err).splitlines()[0][:200]
        raise ValueError(
            f"{uri} is not a tuned settings file ({first}); use the tuned.json a tuning job wrote"
        ) from None


def differences(tuned: ValidFor, wanted: ValidFor) -> list[str]:
    """Each way the identity ``wanted`` (a job's) differs from ``tuned`` (a file's), named: ``task.scale: tuned for
    4, this job has 2``."""
    lines = []
    for name in ("method", "prior", "noise_sigma"):
        if getattr(tuned, name) != getattr(wanted, name):
            lines.append(f"{name}: tuned for {getattr(tuned, name)!r}, this job has {getattr(wanted, name)!r}")
    for key in sorted(set(tuned.task) | set(wanted.task)):
        if key != "noise_sigma" and tuned.task.get(key) != wanted.task.get(key):
            lines.append(f"task.{key}: tuned for {_shown(tuned.task, key)}, this job has {_shown(wanted.task, key)}")
    return lines


def tuned_layer(uri: str, wanted: ValidFor, storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of the tuned file at ``uri`` for a job of identity ``wanted``; ``ValueError`` naming every
    difference when the file was made for another task, noise level, prior or method."""
    tuned = read_tuned(uri, storage_options)
    if problems := differences(tuned.valid_for, wanted):
        raise ValueError(
            f"{uri} was tuned for another job: {'; '.join(problems)}. Tune for this job (docs/tuning.md) or drop tuned"
        )
    return dict(tuned.sampler)


def _shown(task: dict[str, Any], key: str) -> str:
    """A task field's value for a message; a field the identity leaves out is the task's default (e.g. the circular
    boundary)."""
    return repr(task[key]) if key in task else "the default"
