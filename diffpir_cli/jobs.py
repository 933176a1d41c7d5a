"""CLI commands for jobs: ``diffpir run JOB.yaml [--set key=value]`` and ``diffpir status OUTPUT [--json]``."""

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from diffpir_core.io import StoreError
from diffpir_core.job import Job, JobError, load_job


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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and print the effective job only")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="write into a non-empty output although diffpir did not make it")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks and Prefect's error logs")] = False,
    shard: Annotated[
        list[str] | None,
        typer.Option("--shard", help="only this shard (repeatable), e.g. --shard 64x64/000003 (ids as `diffpir status` lists them)"),
    ] = None,
) -> None:
    """Run a restoration job: ingest if needed, restore every shard not yet done, metrics, report."""
    try:
        job = load_job(job_file, set_ or [])
    except JobError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(job.to_yaml() + _effective_sampler(job))
        return
    from diffpir_core.io.outputs import OutputRefused, claim_output
    from diffpir_core.preflight import preflight

    if problems := preflight(job):  # before any Prefect server starts: each a permanent error, said in one line
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    try:
        claim_output(job.output, job.input, job.storage_options, force=force)
    except OutputRefused as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except Exception as err:
        if debug:
            raise
        typer.echo(f"error: output: cannot write {job.output} ({type(err).__name__}: {err}); check output and storage_options", err=True)
        raise typer.Exit(2) from None
    from tqdm import tqdm

    from flows.progress import listening
    from flows.restore import restore

    if not debug:
        _quiet_tracebacks()  # after `import prefect`, which installs the console handler

    bar = tqdm(total=0, unit="shard", desc=f"{job.task_label()} {job.dataset_name()}", dynamic_ncols=True)

    def on_shard(done: int, total: int, item: object) -> None:
        if done == 0:
            from prefect.runtime import flow_run

            run_ids.append(flow_run.root_flow_run_id)
            bar.reset(total=total)  # the clock starts with the shards, not with ingest and server start-up
        bar.n = done
        bar.refresh()

    from prefect.exceptions import TerminationSignal

    from diffpir_cli.server import Terminated, sigterm_as_interrupt, start_temporary_server, stop_when_recorded

    run_ids: list[Any] = []  # the job's flow run, to mark Cancelled after Ctrl-C / SIGTERM
    from diffpir_cli.secrets import split_secrets, warning
    from flows.credentials import in_environment

    public, secrets = split_secrets(job)  # credentials stay out of Prefect's parameters, DB and UI
    if note := warning(secrets):
        typer.echo(note, err=True)
    with sigterm_as_interrupt():
        try:
            server = start_temporary_server()  # dies with this process, even on SIGKILL
            with listening(on_shard), in_environment(secrets):
                state = restore(job=public, shards=shard or None, return_state=True)
            if server is not None:
                stop_when_recorded(server)  # not at exit: stopped while it still records task runs, it logs tracebacks
        except (KeyboardInterrupt, TerminationSignal) as err:
            bar.close()
            _cancelled(run_ids, job_file, terminated=isinstance(err, (Terminated, TerminationSignal)))
    bar.close()
    summary = state.result(raise_on_failure=False)
    summary = summary if isinstance(summary, dict) else {}
    if changes := summary.get("input_changes"):
        typer.echo("input: " + ", ".join(f"{count} {what}" for what, count in changes.items()))
    if state.is_completed():
        typer.echo(
            f"completed: {summary['restored']} shard(s) restored, {summary['skipped']} already done; "
            f"report: {summary['report']}; results: {summary.get('results') or summary['job'] + '/restored.zarr'} (array restored)"
        )
        return
    typer.echo(f"failed: {state.message}", err=True)
    reasons = summary.get("failed", {})
    for shard, reason in sorted(reasons.items()):
        typer.echo(f"  shard {shard}: {reason}", err=True)
    raised = state.result(raise_on_failure=False)
    from tasks.errors import EndpointUnreachable, is_transient

    if isinstance(raised, BaseException) and debug:
        raise raised
    permanent = (
        not is_transient(raised) if isinstance(raised, BaseException) else bool(reasons) and all("(permanent)" in r for r in reasons.values())
    )
    if permanent and not any(EndpointUnreachable.__name__ in r for r in reasons.values()):
        typer.echo("this error is permanent: fix what it names (the job file or the inputs) before running the job again", err=True)
    else:
        typer.echo(f"re-run `diffpir run {job_file}` to retry only what is not done", err=True)
    raise typer.Exit(1)


def _quiet_tracebacks() -> None:
    """Prefect's console handler logs failures with their tracebacks; without ``--debug`` only the message stays
    (the API log handler, and so the UI, keeps them)."""
    import logging

    class NoTraceback(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            return True

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.addFilter(NoTraceback())


def _cancelled(run_ids: list[Any], job_file: Path, *, terminated: bool) -> None:
    """After Ctrl-C or SIGTERM: the flow run marked Cancelled, the temporary server stopped, one line, and
    exit 130 / 143 at once (a shard still running in a worker thread is abandoned: without its record it
    simply is not done, and the next run restores it)."""
    import os
    import sys

    from prefect.client.orchestration import get_client
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.states import Cancelled

    what = "SIGTERM" if terminated else "interrupt"
    for run_id in run_ids[:1]:
        with contextlib.suppress(Exception):
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run_id, Cancelled(message=f"cancelled by {what}"), force=True)
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
    for run in job.runs():
        title = f" of {run.name} on {run.task}" if job.is_comparison() else ""
        if run.job is None:
            lines.append(f"# {run.name} on {run.task}: n/a, {run.reason}")
            continue
        settings = run.job.sampler_settings()
        values = settings.config.model_dump(mode="json")
        lines.append(f"# effective {run.method} settings{title} ({settings.config.nfes} network calls per image):")
        lines += [f"#   {name + ':':<17} {values[name]!s:<8} from {source}" for name, source in settings.sources.items()]
    return "\n".join(lines) + "\n"


def status(
    output: Annotated[str, typer.Argument(help="output of one or more jobs (local path or s3://...)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    job: Annotated[str | None, typer.Option("--job", help="only the job whose hash starts with this")] = None,
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", "-o", help="fsspec option key=value, e.g. endpoint_url=...")
    ] = None,
) -> None:
    """List the jobs an output holds and their shards: done, failed (with reason), pending, quarantined inputs."""
    from flows.status import job_status, output_status

    options = {}
    for item in storage_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            typer.echo(f"error: --storage-option {item!r}: expected key=value", err=True)
            raise typer.Exit(2)
        options[key] = value
    try:
        report = {"output": output, "jobs": [job_status(output, options, job)]} if job else output_status(output, options)
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
            f"{counts['failed']} failed, {counts['pending']} pending, {counts['quarantined']} quarantined input(s)"
        )
        typer.echo(f"  results: {entry['store']} (array {entry['array']})")
        for shard in entry["shards"]:
            line = f"  shard {shard['id']:>5}  {shard['state']:<8} attempts={shard['attempts']}"
            if shard["finished_at"]:
                line += f"  finished {shard['finished_at']}"
            if shard["error"]:
                line += f"  error: {shard['error']}"
            typer.echo(line)
