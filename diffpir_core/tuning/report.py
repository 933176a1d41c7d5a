"""The report of a tuning job and its tuned settings file (no Prefect).

``<output>/tuning/<hash>/`` gets report.md, report.html (the objective per trial with the best so far, the chosen
point, the objective and, where there is ground truth, PSNR against each parameter; pruned trials marked) and
summary.json (the trials table); ``<output>/tuned.json`` the best trial's settings (``diffpir_core.tuning.tuned``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from matplotlib.figure import Figure

from diffpir_core.io.uris import join
from diffpir_core.reporting.html import _CSS
from diffpir_core.reporting.plots import _svg_uri
from diffpir_core.reporting.text import _md_escape, format_number, setting_label, to_json
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import write_text
from diffpir_core.sampling import method_config
from diffpir_core.tuning.search import (
    TrialRecord,
    best_record,
    objective_of,
    settings_label,
    trial_metrics,
    tuning_folder,
)
from diffpir_core.tuning.space import most_nfes, tune_of
from diffpir_core.tuning.tuned import TunedObjective, TunedSettings, valid_for, write_tuned

TUNED_FILE = "tuned.json"
_COLOURS = {"complete": "#1f6fb4", "pruned": "#999999", "failed": "#d9822b"}


def trials_table(job: Job, records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One row per trial: number, state, the objective, PSNR (evaluate), images restored, seconds, settings."""
    name = objective_of(job).name
    return [
        {
            "trial": r.number,
            "state": r.state,
            name: r.value,
            **({"psnr": r.psnr} if name != "psnr" and r.psnr is not None else {}),
            "images": r.images,
            "seconds": r.seconds,
            **r.params,
        }
        for r in records
    ]


def budget_line(job: Job, images: int) -> str:
    """The tuning's budget: trials × subset images × the most network calls per image a trial can take."""
    tune = tune_of(job)
    base = job.sampler_config().model_dump(exclude={"noise_sigma"})
    runs = 2 if "sure" in trial_metrics(job) else 1  # SURE's probe restores each image a second time
    nfes = runs * most_nfes(job.method, base, tune.params, job.task.known_sigma)
    total = tune.trials * images * nfes
    return (
        f"budget: {tune.trials} trials x {images} subset image(s) x at most {nfes} network calls = at most "
        f"{total:,} network calls (pruned trials stop after their first {tune.stages(images)[0]} image(s))"
    )


def progress_line(job: Job, records: Sequence[TrialRecord]) -> str:
    """``3/8 trials (1 pruned); best psnr 24.1 at trial 2 (lambda_=7.3, zeta=0.41)``: the progress artifact's text."""
    best = best_record(job, records)
    pruned = sum(r.state == "pruned" for r in records)
    where = (
        f"; best {objective_of(job).name} {best.value:.4g} at trial {best.number} ({settings_label(best.params)})"
        if best
        else ""
    )
    return f"{min(len(records), tune_of(job).trials)}/{tune_of(job).trials} trials ({pruned} pruned){where}"


def tuned_settings(job: Job, records: Sequence[TrialRecord], subset: Sequence[str]) -> TunedSettings | None:
    """The tuned file of the best complete trial (None when no trial completed)."""
    best = best_record(job, records)
    if best is None:
        return None
    objective = objective_of(job)
    settings = method_config(job.method, best.params).model_dump(mode="json", include=set(best.params))
    return TunedSettings(
        method=job.method,
        sampler=settings,
        objective=TunedObjective(name=objective.name, direction=objective.direction, value=best.value),  # type: ignore[arg-type]
        trials=len(records),
        complete=sum(r.state == "complete" for r in records),
        pruned=sum(r.state == "pruned" for r in records),
        best_trial=best.number,
        valid_for=valid_for(job.task, job.task_identity(), job.prior, job.method),
        subset=list(subset),
        tuning=tuning_folder(job),
    )


def write_tuning_report(
    job: Job, records: Sequence[TrialRecord], subset: Sequence[str], wall_seconds: float
) -> dict[str, Any]:
    """Write the tuning's report.md, report.html, summary.json and ``<output>/tuned.json``; returns ``{"summary",
    "uris"}`` (the summary as summary.json holds it). Raises ``ValueError`` when no trial completed: there are no
    settings to keep."""
    tuned = tuned_settings(job, records, subset)
    if tuned is None:
        raise ValueError(
            f"no trial of {len(records)} completed (each was pruned or gave no objective value): no tuned settings; "
            "widen the ranges or set tune.prune: false"
        )
    folder = tuning_folder(job)
    objective = objective_of(job)
    best = next(r for r in records if r.number == tuned.best_trial)
    summary = {
        "title": _title(job),
        "output": job.output,
        "tuning": join(job.output, folder),
        "tuned": join(job.output, TUNED_FILE),
        "report": join(job.output, f"{folder}/report.html"),
        "objective": {"name": objective.name, "direction": objective.direction},
        "best": {"trial": best.number, "value": best.value, "psnr": best.psnr, "params": tuned.sampler},
        "counts": {"trials": len(records), "complete": tuned.complete, "pruned": tuned.pruned},
        "subset": list(subset),
        "budget": budget_line(job, len(subset)),
        "wall_seconds": round(wall_seconds, 3),
        "trials": trials_table(job, records),
    }
    markdown = _markdown(job, summary)
    uris = {
        "report.md": write_text(job.output, f"{folder}/report.md", markdown, job.storage_options),
        "report.html": write_text(
            job.output, f"{folder}/report.html", _html(job, records, summary), job.storage_options
        ),
        "summary.json": write_text(job.output, f"{folder}/summary.json", to_json(summary) + "\n", job.storage_options),
    }
    write_tuned(summary["tuned"], tuned, job.storage_options)
    return {"summary": summary, "uris": uris, "markdown": markdown}


def tuning_artifact(job: Job, report: Mapping[str, Any]) -> dict[str, Any]:
    """The Prefect markdown artifact of a tuning (its report's text): ``create_markdown_artifact(**...)``."""
    key = f"{job.dataset_name()}-{job.task_label()}-tuning".lower()
    return {"key": "".join(c if c.isalnum() else "-" for c in key).strip("-"), "markdown": report["markdown"]}


def _title(job: Job) -> str:
    return f"Tuning {job.method} for {job.task.title()} on {job.dataset_name()} ({job.mode} mode, prior {job.prior})"


def _intro(summary: Mapping[str, Any]) -> list[str]:
    counts, best, objective = summary["counts"], summary["best"], summary["objective"]
    held_out = "the images outside it are held out"
    return [
        f"Objective: {objective['name']} ({objective['direction']}) over a subset of {len(summary['subset'])} "
        f"image(s); {held_out}.",
        f"{counts['trials']} trial(s): {counts['complete']} complete, {counts['pruned']} pruned; "
        f"{summary['budget']}; {summary['wall_seconds']:.0f} s.",
        f"Chosen: trial {best['trial']}, {objective['name']} = {format_number(best['value'])}"
        + (f", PSNR {format_number(best['psnr'], 2)} dB" if best["psnr"] is not None else "")
        + f": {settings_label(best['params'])}. Tuned file: {summary['tuned']} (`tuned:` in a job).",
    ]


def _markdown(job: Job, summary: Mapping[str, Any]) -> str:
    rows = summary["trials"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [f"# {summary['title']}", "", *_intro(summary), "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(_md_escape(_cell(row.get(c))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    """A table cell: numbers to 5 significant digits (SURE's values are a few thousandths), None empty."""
    return f"{value:.5g}" if isinstance(value, float) else ("" if value is None else str(value))


def _html(job: Job, records: Sequence[TrialRecord], summary: Mapping[str, Any]) -> str:
    objective = summary["objective"]["name"]
    plots = [_trials_plot(records, objective, summary["best"]["trial"], _maximise(job))]
    for name, spec in tune_of(job).params.items():
        plots.append(_parameter_plot(records, name, objective, summary["best"]["trial"], spec.log, "value"))
        if objective != "psnr" and any(r.psnr is not None for r in records):
            plots.append(_parameter_plot(records, name, "psnr", summary["best"]["trial"], spec.log, "psnr"))
    rows = summary["trials"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = "<table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>"
    for row in rows:
        mark = ' style="font-weight:bold"' if row["trial"] == summary["best"]["trial"] else ""
        table += f"<tr{mark}>" + "".join(f"<td>{escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
    table += "</table>"
    intro = "".join(f"<p>{escape(line)}</p>" for line in _intro(summary))
    figures = "".join(f'<img src="{uri}" alt="tuning plot">' for uri in plots)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(summary['title'])}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(summary['title'])}</h1>{intro}<div>{figures}</div>"
        f"<h2>Trials</h2>{table}</body></html>\n"
    )


def _maximise(job: Job) -> bool:
    return objective_of(job).direction == "maximize"


def _trials_plot(records: Sequence[TrialRecord], objective: str, chosen: int, maximise: bool) -> str:
    """The objective of each trial over its number (pruned trials at their first stage's value, as x), the best so
    far as a step line, the chosen trial as a star."""
    figure = Figure(figsize=(5.2, 3.0), dpi=100)
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)
    axes = figure.add_subplot()
    best, line = None, []
    for r in records:
        value = _shown(r, "value")
        if value is not None:
            axes.scatter([r.number], [value], marker="x" if r.state == "pruned" else "o", color=_COLOURS[r.state])
        if r.state == "complete" and value is not None:
            best = value if best is None else (max(best, value) if maximise else min(best, value))
        line.append(best)
    axes.step(
        range(len(records)), [math.nan if b is None else b for b in line], where="post", color="#444444", linewidth=1
    )
    _star(axes, records, chosen, "number", "value")
    axes.set_xlabel("trial")
    axes.set_ylabel(objective)
    axes.set_title(f"{objective} per trial (x: pruned, first stage only; line: best so far)", fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg_uri(figure)


def _parameter_plot(
    records: Sequence[TrialRecord], parameter: str, label: str, chosen: int, log: bool, what: str
) -> str:
    """``what`` (the objective or PSNR) of each trial against one parameter; pruned trials as x, the chosen as a
    star."""
    figure = Figure(figsize=(5.2, 3.0), dpi=100)
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)
    axes = figure.add_subplot()
    for r in records:
        value = _shown(r, what)
        if value is not None and isinstance(r.params.get(parameter), int | float):
            marker = "x" if r.state == "pruned" else "o"
            axes.scatter([r.params[parameter]], [value], marker=marker, color=_COLOURS[r.state])
    _star(axes, records, chosen, parameter, what)
    if log:
        axes.set_xscale("log")
    axes.set_xlabel(setting_label(parameter))
    axes.set_ylabel(label)
    axes.set_title(f"{label} against {setting_label(parameter)} (x: pruned, first stage only)", fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg_uri(figure)


def _shown(record: TrialRecord, what: str) -> float | None:
    """A trial's value as plotted: the objective (a pruned trial's: after its first stage) or its PSNR."""
    if what == "psnr":
        return record.psnr
    if record.state == "pruned":
        return record.intermediate.get(0)
    return record.value


def _star(axes: Any, records: Sequence[TrialRecord], chosen: int, x: str, what: str) -> None:
    record = next((r for r in records if r.number == chosen), None)
    value = None if record is None else _shown(record, what)
    position = None if record is None else (record.number if x == "number" else record.params.get(x))
    if value is not None and isinstance(position, int | float):
        axes.scatter([position], [value], marker="*", s=180, color="#c0392b", zorder=3, label="chosen")
        axes.legend(fontsize=8, frameon=False)


def plan_lines(job: Job) -> list[str]:
    """What a tuning job will do, for ``diffpir run --dry-run``: objective, parameters, subset, stages, budget, and
    where the trials and the tuned file go."""
    tune = tune_of(job)
    images = tune.subset.size()
    objective = objective_of(job)
    ranges = [
        f"{name} in {spec.choices}"
        if spec.choices is not None
        else f"{name} in [{spec.low:g}, {spec.high:g}]{' (log)' if spec.log else ''}"
        for name, spec in tune.params.items()
    ]
    subset = f"{images} image(s) picked by a hash of their ids" if tune.subset.ids is None else "the listed ids"
    stages = tune.stages(images)
    pruning = (
        f"median pruning after the first {stages[0]} image(s)" if tune.prune and len(stages) > 1 else "no pruning"
    )
    return [
        f"tuning: {tune.trials} trials of Optuna TPE (seed {tune.seed}) over {'; '.join(ranges)}",
        f"tuning: objective {objective.name} ({objective.direction}) on {subset}, the rest held out; {pruning}",
        f"tuning: {budget_line(job, images)}",
        f"tuning: trials kept in {join(job.output, tuning_folder(job))}/trials; best settings to "
        f"{join(job.output, TUNED_FILE)}",
    ]


def completed_lines(summary: Mapping[str, Any]) -> list[str]:
    """The CLI's last lines after a tuning job: every trial, the chosen settings, the tuned file and the report."""
    objective, best, counts = summary["objective"]["name"], summary["best"], summary["counts"]
    lines = [f"{'trial':>5}  {'state':<8} {objective:>12}  settings"]
    for row in summary["trials"]:
        params = {k: v for k, v in row.items() if k not in ("trial", "state", objective, "psnr", "images", "seconds")}
        lines.append(f"{row['trial']:>5}  {row['state']:<8} {_cell(row.get(objective)):>12}  {settings_label(params)}")
    lines += [
        f"completed: {counts['trials']} trial(s), {counts['complete']} complete, {counts['pruned']} pruned; "
        f"best trial {best['trial']}: {objective} {format_number(best['value'])} with "
        f"{settings_label(best['params'])}",
        f"tuned: {summary['tuned']} (use it with `tuned:` in a job)",
        f"report: {summary['report']}",
    ]
    return lines
