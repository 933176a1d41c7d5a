"""The registry of task kinds: every ``TaskKind`` subclass defined in a module of this package.

``TaskSpec`` is the discriminated union (on ``kind``) that the job's ``task`` field is typed with, so a
new module here is a new job ``task.kind`` with its own validated fields, and nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType
from typing import Annotated, Any, Union

from pydantic import Field

from diffpir_core.sampling import DiffPIRConfig
from diffpir_core.task_kinds.base import TaskKind

_NOT_KINDS = frozenset({"base", "registry"})


def _discover() -> dict[str, type[TaskKind]]:
    package = __name__.rsplit(".", 1)[0]
    kinds: dict[str, type[TaskKind]] = {}
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda m: m.name):
        if info.name in _NOT_KINDS:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, TaskKind) and value.__module__ == module.__name__:
                name = value.model_fields["kind"].default
                if name in kinds:
                    raise RuntimeError(f"task kind {name!r} is defined twice ({kinds[name]} and {value})")
                kinds[name] = value
    return kinds


TASK_KINDS: MappingProxyType[str, type[TaskKind]] = MappingProxyType(_discover())
"""Task kind name -> its class, in module-name order."""

TaskSpec = Annotated[Union[tuple(TASK_KINDS.values())], Field(discriminator="kind")]  # noqa: UP007
"""The job's ``task`` field: one of the registered kinds, chosen by ``kind``."""


def task_kind(name: str) -> type[TaskKind]:
    """The class of task kind ``name``; an unknown name is an error listing the known ones."""
    if name not in TASK_KINDS:
        raise ValueError(f"unknown task kind {name!r}: choose one of {sorted(TASK_KINDS)}")
    return TASK_KINDS[name]


def default_task() -> TaskKind:
    """The job's task when none is given: SR ×4 with its defaults."""
    return task_kind("sr")()


def task_preset(name: str, **overrides: Any) -> DiffPIRConfig:
    """The reference DiffPIR run configuration of task kind ``name`` (noise σ = the kind's default),
    with ``overrides`` applied (validated)."""
    kind = task_kind(name)
    sigma = kind.model_fields["noise_sigma"].default
    return DiffPIRConfig(**{**kind.PRESETS["diffpir"], "noise_sigma": sigma, **overrides})
