"""CLI commands for jobs: ``diffpir run JOB.yaml [--set key=value]`` and ``diffpir status OUTPUT [--json]``."""

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from diffpir_core.io import StoreError
from diffpir_core.runs.job import Job, JobError, load_job
from diffpir_core.task_kinds.base import AUTO_SIGMA

QUARANTINE_SHOWN = 10  # quarantined images the text view of `diffpir status` names per job (--json: all)


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``status`` to the ``diffpir`` app."""
    app.command("run")(run)
    app.command("status")(status)


def run(
    job_file: Annotated[Path, typer.Argument(help="job YAML (see docs/jobs.md)")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a field, e.g. --set task.scale=4 --set sampler.iter_num=20"),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="validate, print the effective job and its cost, run every preflight check; restore nothing",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="write into a non-empty output although diffpir did not make it")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks and Prefect's error logs")] = False,
    shard: Annotated[
        list[str] | None,
        typer.Option(
            "--shard",
            help="only this shard (repeatable), e.g. --shard 64x64/000003 (ids as `diffpir status` lists them)",
        ),
    ] = None,
) -> None:
    """Run a restoration job: ingest if needed, restore every shard not yet done, metrics, report."""
    try:
        job = load_job(job_file, set_ or [])
    except JobError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    from diffpir_core.reporting import outcome_line
    from diffpir_core.runs.preflight import cost_lines, demo_prior_notice, preflight, restored_sizes

    sizes = restored_sizes(job)
    if dry_run:
        typer.echo(job.to_yaml() + _effective_sampler(job))
        if job.tune is not None:
            from diffpir_core.tuning.report import plan_lines

            for line in plan_lines(job):
                typer.echo(line)
        for line in cost_lines(job, sizes):
            typer.echo(line)
    problems, notes = preflight(job)  # before any Prefect server starts: each a permanent error, said in one line
    if notice := demo_prior_notice(job, sizes):
        notes.append(notice)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(2)
    if dry_run:
        typer.echo(
            "preflight: every check passed (input, task files, prior, device, runner, storage); nothing was run"
        )
        return
    from diffpir_core.io.outputs import OutputRefused, claim_output

    try:
        claim_output(job.output, job.input, job.storage_options, force=force)
    except OutputRefused as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except Exception as err:
        if debug:
            raise
        typer.echo(
            f"error: output: cannot write {job.output} ({type(err).__name__}: {err}); check output and "
            "storage_options",
            err=True,
        )
        raise typer.Exit(2) from None
    from tqdm import tqdm

    from diffpir_flow.flows.progress import ShardProgress, listening
    from diffpir_flow.flows.run import run as run_flow

    _tidy_console(debug)  # after `import prefect`, which installs the console handler

    bar = tqdm(total=0, unit="image", desc=job.dataset_name(), dynamic_ncols=True, bar_format=_BAR)

    counted: list[ShardProgress] = []  # the sub-flow runs' progress, the current one last

    def on_progress(progress: ShardProgress, item: object) -> None:
        if not counted or counted[-1] is not progress:
            counted.append(progress)
            bar.set_description(progress.label, refresh=False)
            bar.reset(
                total=progress.images_total
            )  # the clock starts with the shards, not with ingest and server start-up
        bar.n = round(progress.images_now, 2)
        bar.set_postfix_str(f"{progress.done}/{progress.total} shards", refresh=False)
        bar.refresh()

    from diffpir_flow.cli.server import (
        Terminated,
        in_worker_thread,
        sigterm_as_interrupt,
        start_temporary_server,
        stop_when_recorded,
    )

    run_ids: list[Any] = []  # the job's flow run, to mark Cancelled after Ctrl-C / SIGTERM
    from diffpir_core.runs.environment import changed_environment
    from diffpir_flow.cli.secrets import split_secrets, warning

    public, secrets = split_secrets(job)  # credentials stay out of Prefect's parameters, DB and UI
    if note := warning(secrets):
        typer.echo(note, err=True)
    flow = run_flow.with_options(on_running=[lambda _flow, flow_run, _state: run_ids.append(flow_run.id)])
    with sigterm_as_interrupt():
        try:
            server = start_temporary_server()  # dies with this process, even on SIGKILL
            with (
                listening(on_progress),
                changed_environment(secrets),
            ):  # the flow in a thread: signals reach this one at once
                state = in_worker_thread(lambda: flow(job=public, shards=shard or None, return_state=True))
            if server is not None:
                stop_when_recorded(
                    server, [state.state_details.flow_run_id]
                )  # stopped at exit while it records, it logs tracebacks
        except KeyboardInterrupt as err:
            bar.close()
            _cancelled(run_ids, job_file, terminated=isinstance(err, Terminated))
    bar.close()
    summary = state.result(raise_on_failure=False)
    summary = summary if isinstance(summary, dict) else {}
    if changes := summary.get("input_changes"):
        typer.echo("input: " + ", ".join(f"{count} {what}" for what, count in changes.items()))
    if state.is_completed() and summary.get("tuned"):
        from diffpir_core.tuning.report import completed_lines

        typer.echo("\n".join(completed_lines(summary)))
        return
    if state.is_completed():
        if table := _results_table(summary, job):
            typer.echo(table)
        typer.echo(
            f"completed: {outcome_line(summary['images_restored'], summary['quarantined'])}; "
            f"{summary['restored']} shard(s) run, {summary['skipped']} already done\n"
            f"results: {summary.get('results') or summary['job'] + '/restored.zarr'} (array restored)\nreport: "
            f"{summary['report']}"
        )
        return
    raised = state.result(raise_on_failure=False)
    if isinstance(raised, BaseException) and debug:
        raise raised
    _failed(state.message, summary, raised, job_file)
    raise typer.Exit(1)


_BAR = "{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} images [{elapsed}<{remaining}{postfix}]"


def _failed(message: str | None, summary: dict[str, Any], raised: Any, job_file: Path) -> None:
    """The last lines of a failed run: each failed shard once (or the one message of an unreachable endpoint, which
    names them), then each distinct thing to do once: the fixes the failures name, else a re-run when one may help."""
    from diffpir_core.reporting import nothing_restored
    from diffpir_core.runs.failures import is_transient

    failures = list(summary.get("failed", {}).values())
    if failures and not any(f.unreachable for f in failures):
        typer.echo(f"failed: {len(failures)} shard(s) failed:", err=True)
        for failure in sorted(failures, key=lambda f: f.shard):
            typer.echo(f"  shard {failure.shard}: {failure.reason}", err=True)
    else:
        typer.echo(f"failed: {message}", err=True)
    fixes = list(dict.fromkeys(f.fix for f in failures if f.fix and not f.unreachable))
    for fix in fixes:
        typer.echo(f"to fix: {fix}", err=True)
    quarantined = nothing_restored(summary.get("images_restored", 0), summary.get("quarantined") or {}) is not None
    retry = (
        is_transient(raised)
        if isinstance(raised, BaseException)
        else any(f.transient or f.unreachable for f in failures)
    )
    if not retry and not fixes or quarantined:
        typer.echo(
            "this error is permanent: fix what it names (the job file or the inputs) before running the job again",
            err=True,
        )
    elif retry:
        typer.echo(f"re-run `diffpir run {job_file}` to retry only what is not done", err=True)


def _results_table(summary: dict[str, Any], job: Job) -> str | None:
    """The compact table of what ran (``diffpir_flow.cli.tables``): a comparison's rows, else the job's
    ``summary.json``
    beside its report; None when it cannot be read."""
    from diffpir_flow.cli.tables import comparison_row, render, summary_row

    if summary.get("variants"):
        return render([comparison_row(row) for row in summary["variants"]])
    try:
        from diffpir_core.io.uris import filesystem

        fs, path = filesystem(summary["job"].rstrip("/") + "/summary.json", job.storage_options)
        with fs.open(path) as handle:
            report = json.load(handle)
    except Exception:  # the table is a courtesy: the report path below still says where the results are
        return None
    return render([summary_row(report)])


def _tidy_console(debug: bool) -> None:
    """Prefect's console handler, made fit for a terminal with a progress bar: each line written above the bar (never
    on its line); without ``--debug`` no tracebacks and no repeats of a shard's failure (the task's warning, the flow's
    error and its final state: the run's last lines name every failed shard once). The API log handler, and so the
    UI, keeps everything."""
    import logging

    from tqdm import tqdm

    class Tidy(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.msg == "shard %s failed: %s" or str(record.msg).startswith("Finished in state Failed"):
                return False
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            return True

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                if not debug:
                    handler.addFilter(Tidy())
                emit = handler.emit

                def above_the_bar(record: logging.LogRecord, emit: Any = emit) -> None:
                    with tqdm.external_write_mode():
                        emit(record)

                handler.emit = above_the_bar  # type: ignore[method-assign]


def _cancelled(run_ids: list[Any], job_file: Path, *, terminated: bool) -> None:
    """After Ctrl-C or SIGTERM: the flow run, its sub-flow runs and their unfinished task runs marked Cancelled, the
    temporary server stopped, one line, and exit 130 / 143 at once (a shard still running in a worker thread is
    abandoned: without its record it simply is not done, and the next run restores it)."""
    import os
    import sys

    from prefect.server.api.server import SubprocessASGIServer

    from diffpir_flow.cli.server import cancel_runs

    what = "SIGTERM" if terminated else "interrupt"
    with contextlib.suppress(Exception):
        cancel_runs(run_ids, f"cancelled by {what}")
    with contextlib.suppress(Exception):
        SubprocessASGIServer().stop()
    typer.echo(f"cancelled by {what}: finished shards are kept; `diffpir run {job_file}` restores the rest", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(143 if terminated else 130)


def _effective_sampler(job: Job) -> str:
    """The sampler settings the job (each variant × task of a comparison) runs with and where each value came from,
    as YAML comments."""
    lines = []
    for run in job.cells():
        title = f" of {run.name} on {run.task}" if job.is_comparison() else ""
        if run.job is None:
            lines.append(f"# {run.name} on {run.task}: n/a, {run.reason}")
            continue
        settings = run.job.sampler_settings()
        values = settings.config.model_dump(mode="json")
        per = "image" if run.job.uncertainty is None else f"sample, {run.job.uncertainty.samples} samples per image"
        lines.append(f"# effective {run.method} settings{title} ({settings.config.nfes} network calls per {per}):")
        sources = dict(settings.sources)
        if getattr(run.job.task, "noise_sigma", None) == AUTO_SIGMA and "noise_sigma" in sources:
            values["noise_sigma"], sources["noise_sigma"] = "auto", "task (estimated per image from its measurement)"
        lines += [f"#   {name + ':':<17} {values[name]!s:<8} from {source}" for name, source in sources.items()]
    return "\n".join(lines) + "\n"


def status(
    output: Annotated[str, typer.Argument(help="output of one or more jobs (local path or s3://...)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    job: Annotated[str | None, typer.Option("--job", help="only the job whose hash starts with this")] = None,
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", "-o", help="fsspec option key=value, e.g. endpoint_url=...")
    ] = None,
) -> None:
    """List the jobs an output holds and their shards: done, failed (with reason), pending; and the quarantined
    images."""
    from diffpir_core.reporting.text import problem_line
    from diffpir_core.runs.status import job_status, output_status

    options = {}
    for item in storage_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            typer.echo(f"error: --storage-option {item!r}: expected key=value", err=True)
            raise typer.Exit(2)
        options[key] = value
    try:
        report = (
            {"output": output, "jobs": [job_status(output, options, job)]} if job else output_status(output, options)
        )
    except (FileNotFoundError, StoreError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{output}: {len(report['jobs'])} job(s), the last run first")
    for entry in report["jobs"]:
        counts = entry["counts"]
        typer.echo(
            f"job {entry['job_hash'][:16]}  {entry['title']}  planned {entry['planned_at']}: {counts['done']} done, "
            f"{counts['failed']} failed, {counts['pending']} pending, {counts['quarantined']} quarantined image(s)"
        )
        typer.echo(f"  results: {entry['store']} (array {entry['array']})")
        for item in entry["quarantined"][:QUARANTINE_SHOWN]:
            typer.echo(f"  quarantined {problem_line(item)}")
        if counts["quarantined"] > QUARANTINE_SHOWN:
            typer.echo(
                f"  ... and {counts['quarantined'] - QUARANTINE_SHOWN} more quarantined image(s) (--json lists them "
                "all)"
            )
        for shard in entry["shards"]:
            line = f"  shard {shard['id']:>5}  {shard['state']:<8} attempts={shard['attempts']}"
            if shard["finished_at"]:
                line += f"  finished {shard['finished_at']}"
            if shard["error"]:
                line += f"  error: {shard['error']}"
            typer.echo(line)
