"""The search of a tuning job (no Prefect): Optuna's TPE sampler proposes each trial's settings, its median pruner
stops a trial whose first images score worse than the median of the finished trials, and every finished trial is a
small record in the output, from which the study is rebuilt whenever it is needed.

The records are the search's only state: :func:`study_of` replays them into an in-memory Optuna study
(``study.add_trial(create_trial(...))``), so an interrupted tuning job (killed, or on another machine, or with an S3
output) resumes where its records end, and never runs a finished trial again. The sampler is seeded with the tuning
seed and the number of finished trials, so the trial a killed run was in the middle of is proposed again with the
same settings, and its restored shards are found done.

A trial is an ordinary job (:func:`trial_job`): the tuning job's settings with the trial's on top, one image per
shard (so that the subset and its stages are a selection of shards), and the objective's metric among its metrics;
in evaluate mode every trial restores the same stored measurements (a comparison's shared store).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict

from diffpir_core.io import DatasetStore
from diffpir_core.io.listing import listed
from diffpir_core.io.uris import filesystem, join
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, ShardSelection, read_text, write_text
from diffpir_core.tuning.objectives import OBJECTIVES, Objective
from diffpir_core.tuning.space import ParamRange, is_int, objective_name, tune_of

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a trial's line is the flow's to log, once

TrialState = Literal["complete", "pruned", "failed"]
_STATES = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
}


class TrialRecord(BaseModel):
    """A finished trial, as kept in ``<tuning folder>/trials/<number>.json``: its settings, what it came to, and
    the job that ran it. ``value``: the objective over every image it restored (complete), or over the first stage
    (pruned); None when an image could not be scored (failed). ``intermediate``: the objective after each stage but
    the last."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None
    intermediate: dict[int, float] = {}
    psnr: float | None = None  # mean PSNR of the restored images (evaluate mode)
    images: int
    job_hash: str
    seconds: float


def objective_of(job: Job) -> Objective:
    """The objective ``job``'s tuning scores trials by (checked when the job was validated)."""
    return OBJECTIVES[objective_name(tune_of(job), job.mode) or ""]  # type: ignore[arg-type]


def tuning_hash(job: Job) -> str:
    """The identity of a tuning: the job it tunes (its hash: input, task, prior, settings, seed, ...), the search
    space, objective, subset, stages, pruning and seed; not the number of trials, so that a re-run with more trials
    continues the same search."""
    spec = tune_of(job).model_dump(mode="json", exclude={"trials"})
    base = Job.model_validate(job.model_dump(exclude={"tune"}))
    identity = {"job": base.job_hash(), "tune": spec, "objective": objective_of(job).name}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def tuning_folder(job: Job) -> str:
    """The tuning's folder inside the job's output: ``tuning/<first 16 hex digits of its hash>``."""
    return f"tuning/{tuning_hash(job)[:16]}"


def trial_metrics(job: Job) -> list[str]:
    """The metrics every trial computes: the objective's, and PSNR where there is ground truth (for the report)."""
    metric = objective_of(job).metric
    return [metric] + (["psnr"] if job.mode == "evaluate" and metric != "psnr" else [])


def trial_job(job: Job, params: Mapping[str, Any]) -> Job:
    """The job one trial runs: ``job`` without ``tune``, ``params`` over its ``sampler``, one image per shard, the
    objective's metrics."""
    data = job.model_dump(exclude={"tune"})
    data.update(sampler={**job.sampler, **params}, shard_size=1, metrics=trial_metrics(job))
    return Job.model_validate(data)


def distributions(job: Job) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distribution of each parameter: categorical for choices, int or float (log or not) for ranges."""
    return {name: _distribution(job.method, name, spec) for name, spec in tune_of(job).params.items()}


def _distribution(method: str, name: str, spec: ParamRange) -> optuna.distributions.BaseDistribution:
    if spec.choices is not None:
        return optuna.distributions.CategoricalDistribution(spec.choices)
    if is_int(method, name):
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log)  # type: ignore[arg-type]
    return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log)  # type: ignore[arg-type]


def study_of(job: Job, records: Sequence[TrialRecord], sampler_seed: int | None = None) -> optuna.Study:
    """An in-memory study of ``job``'s tuning holding ``records`` (TPE sampler seeded with ``sampler_seed``; median
    pruner)."""
    trials = tune_of(job).trials
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=max(2, min(10, trials // 3)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, trials // 4)), n_warmup_steps=0)
    study = optuna.create_study(direction=objective_of(job).direction, sampler=sampler, pruner=pruner)
    space = distributions(job)
    for record in sorted(records, key=lambda r: r.number):
        study.add_trial(
            optuna.trial.create_trial(
                state=_STATES[record.state],
                value=record.value if record.state == "complete" else None,
                params=record.params,
                distributions=space,
                intermediate_values=dict(record.intermediate),
            )
        )
    return study


def starting_point(job: Job) -> dict[str, Any] | None:
    """The job's own values of the searched settings (task preset → prior card → tuned file → ``sampler:``) when
    each lies in its range or among its choices, else None: the first trial runs them, so the tuned settings are
    never worse on the subset than those the job would run without tuning."""
    config = job.sampler_config()
    point = {name: getattr(config, name) for name in tune_of(job).params}
    for name, spec in tune_of(job).params.items():
        inside = point[name] in spec.choices if spec.choices is not None else spec.low <= point[name] <= spec.high
        if not inside:
            return None
    return point


def next_params(job: Job, records: Sequence[TrialRecord]) -> dict[str, Any]:
    """The settings of the next trial: the job's own values first (:func:`starting_point`, when they lie in the
    space), then TPE's proposal given every finished trial, seeded by the tuning seed and their number (the same
    proposal whenever the same trials are finished)."""
    if not records and (start := starting_point(job)) is not None:
        return start
    seed = tune_of(job).seed * 100_003 + len(records)
    trial = study_of(job, records, sampler_seed=seed).ask(distributions(job))
    return dict(trial.params)


def should_prune(job: Job, records: Sequence[TrialRecord], params: Mapping[str, Any], step: int, value: float) -> bool:
    """Whether the median pruner stops a trial with ``params`` whose objective after stage ``step`` is ``value``,
    given the finished trials ``records`` (never when the job's ``prune`` is off, or the value is not a number)."""
    if not tune_of(job).prune or math.isnan(value):
        return False
    study = study_of(job, records)
    study.enqueue_trial(dict(params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # enqueued values are the trial's own, not a user's guess
        trial = study.ask(distributions(job))
    trial.report(value, step)
    return trial.should_prune()


def trial_value(objective: Objective, rows: Sequence[Mapping[str, Any]]) -> float:
    """The objective of a trial's per-image ``rows`` (NaN when an image has no value)."""
    return objective.value([row.get(objective.metric) for row in rows])


def mean_psnr(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean PSNR of ``rows`` (None without ground truth)."""
    values = [row["psnr"] for row in rows if row.get("psnr") is not None]
    return sum(values) / len(values) if values else None


def write_record(job: Job, record: TrialRecord) -> None:
    """Keep a finished trial in the output (atomically: a killed run leaves the record whole or absent)."""
    path = f"{tuning_folder(job)}/trials/{record.number:06d}.json"
    write_text(job.output, path, record.model_dump_json(), job.storage_options)


def read_records(job: Job) -> list[TrialRecord]:
    """Every finished trial of ``job``'s tuning kept in its output, by number ([] before the first)."""
    folder = f"{tuning_folder(job)}/trials"
    fs, base = filesystem(job.output, job.storage_options)
    names = [name for name in listed(fs, join(base, folder)) if name.endswith(".json")]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="trial-read") as pool:
        texts = pool.map(lambda name: read_text(job.output, f"{folder}/{name}", job.storage_options), names)
        records = [TrialRecord.model_validate_json(text) for text in texts if text]
    return sorted(records, key=lambda r: r.number)


def best_record(job: Job, records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the best objective (the first such on ties), or None."""
    sign = 1.0 if objective_of(job).direction == "maximize" else -1.0
    complete = [r for r in records if r.state == "complete" and r.value is not None and not math.isnan(r.value)]
    return max(complete, key=lambda r: (sign * r.value, -r.number), default=None)  # type: ignore[operator]


def settings_label(params: Mapping[str, Any]) -> str:
    """``lambda_=7.3, zeta=0.41, iter_num=20``: a trial's settings, numbers to 3 significant digits."""
    return ", ".join(
        f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
    )


def input_ids(store_uri: str, storage_options: Mapping[str, Any]) -> list[str]:
    """The id of every image of the dataset store at ``store_uri``, group by group."""
    store = DatasetStore.open(store_uri, dict(storage_options))
    return [image_id for ref in store.shards() for image_id in ref.ids]


def stage_selections(job: Job, plan: JobPlan, subset: Sequence[str]) -> list[ShardSelection]:
    """The shards of each stage of a trial planned as ``plan`` (one image per shard): the first stage's images of
    ``subset`` (the pruning point), then the rest (``TuneSpec.stages``)."""
    key_of = {ref.ids[0]: ref.key for ref in DatasetStore.open(plan.output_store, job.storage_options).shards()}
    selections, start = [], 0
    for size in tune_of(job).stages(len(subset)):
        selections.append(ShardSelection.of_keys([key_of[image_id] for image_id in subset[start : start + size]]))
        start += size
    return selections


def trial_record(
    job: Job,
    number: int,
    params: Mapping[str, Any],
    stage_rows: Sequence[Sequence[Mapping[str, Any]]],
    pruned: bool,
    job_hash: str,
    seconds: float,
) -> TrialRecord:
    """The record of a trial that restored the stages whose rows are ``stage_rows`` (all of them, or the first ones
    when ``pruned``): its objective over every restored image, and after each stage but the last."""
    objective = objective_of(job)
    rows = [row for stage in stage_rows for row in stage]
    judged = len(stage_rows) if pruned else len(stage_rows) - 1  # the stages a pruning decision followed
    intermediate = {
        step: trial_value(objective, [row for stage in stage_rows[: step + 1] for row in stage])
        for step in range(judged)
    }
    value = trial_value(objective, rows)
    state: TrialState = "pruned" if pruned else ("failed" if math.isnan(value) else "complete")
    return TrialRecord(
        number=number,
        params=dict(params),
        state=state,
        value=None if math.isnan(value) else value,
        intermediate={step: v for step, v in intermediate.items() if not math.isnan(v)},
        psnr=mean_psnr(rows),
        images=len(rows),
        job_hash=job_hash,
        seconds=round(seconds, 3),
    )
