"""Comparison jobs: a job's ``variants`` (methods, settings, grids of settings) × its ``tasks`` expanded into cells.

Each run is a plain job (one method, one task) with a hash of its own, so each writes its own output array and
records and a re-run only restores what is missing; variants of one task share the task's synthesised
measurements (``diffpir_core.runs.plan``). A variant whose method cannot use a task's operator (DDRM without an SVD) is
a
run without a job, reported as n/a, as the paper does for motion blur.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from diffpir_core.operators import NoSVDError
from diffpir_core.sampling import check_operator, check_overrides
from diffpir_core.sampling.methods import MethodName, get_method
from diffpir_core.task_kinds import TaskKind

_PROBE_SIZE = 64  # ground-truth side of the placeholder operator that answers "has an SVD?" without data


class Variant(BaseModel):
    """One entry of ``variants:``: a method and settings, or (``grid``) one variant per combination of values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, min_length=1, description="label in the report; null = method and settings")
    method: MethodName | None = Field(None, description="null = the job's method")
    sampler: dict[str, Any] = Field(default_factory=dict, description="settings of the method's config")
    grid: dict[str, list[Any]] | None = Field(
        None, description="setting -> values: one variant per combination (e.g. {lambda_: [1, 7], zeta: [0.3, 1]})"
    )


class Cell(NamedTuple):
    """One variant on one task: its job, or None and why the method cannot run the task."""

    name: str
    task: str
    job: Any  # diffpir_core.runs.job.Job | None (the job module imports this one)
    reason: str | None = None
    method: str = "diffpir"
    settings: Mapping[str, Any] = {}
    swept: Mapping[str, Any] = {}


def operator_problem(method: str, task: TaskKind, storage_options: Mapping[str, Any]) -> str | None:
    """Why ``method`` cannot use ``task``'s operator (DDRM needs an SVD), or None; checked on a placeholder operator
    built from the task's measurement arrays, before any data is read. An operator that cannot be built without
    its files (e.g. a kernel file not reachable now) is not judged here: the sampler refuses it before any image."""
    if not get_method(method).requires_svd:
        return None
    try:
        shapes = task.measurement_arrays(_PROBE_SIZE, _PROBE_SIZE, storage_options)
        arrays = {name: np.ones((1, *shape), dtype=dtype) for name, (shape, dtype) in shapes.items()}  # valid kernels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a flat placeholder kernel is normalised, with a warning meant for users
            operator = task.operator(task.params_from_arrays(arrays))
    except (OSError, ValueError):
        return None
    try:
        check_operator(method, operator)
    except NoSVDError as err:
        return f"{err} (task {task.label()})"
    return None


def _grid_points(grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    if not grid:
        return [{}]
    empty = sorted(name for name, values in grid.items() if not values)
    if empty:
        raise ValueError(f"grid: {', '.join(empty)} list(s) no values; give at least one")
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[name] for name in names))]


def _label(method: str, settings: Mapping[str, Any]) -> str:
    return method if not settings else f"{method} " + ", ".join(f"{key}={value}" for key, value in settings.items())


def expand_variants(
    variants: Sequence[Variant],
    job_method: str,
    job_sampler: Mapping[str, Any],
    tasks: Sequence[TaskKind],
    storage_options: Mapping[str, Any],
    build: Callable[[str, dict[str, Any], TaskKind], Any],
) -> list[Cell]:
    """The cells of every variant on every task (tasks outer). A variant's settings go over the job's ``sampler``
    when it keeps the job's method (another method starts from its own preset); ``build(method, sampler, task)``
    makes the run's job. Raises ``ValueError`` naming the variant for bad settings or duplicate names."""
    cells: list[Cell] = []
    for task in tasks:
        names: set[str] = set()
        for index, variant in enumerate(variants):
            method = variant.method or job_method
            inherited = dict(job_sampler) if method == job_method else {}
            try:
                points = _grid_points(variant.grid)
            except ValueError as err:
                raise ValueError(f"variants[{index}].{err}") from None
            for point in points:
                own = {**variant.sampler, **point}
                settings = check_overrides(method, {**inherited, **own}, field=f"variants[{index}].sampler")
                name = _label(variant.name or method, point) if variant.name else _label(method, own)
                if name in names:
                    raise ValueError(f"variants[{index}]: two variants are named {name!r}; give each a distinct name")
                names.add(name)
                problem = operator_problem(method, task, storage_options)
                job = None if problem else build(method, settings, task)
                cells.append(Cell(name, task.label(), job, problem, method, settings, point))
    return cells
