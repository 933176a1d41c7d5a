"""CLI commands for jobs: ``diffpir run JOB.yaml [--set key=value]`` and ``diffpir status OUTPUT [--json]``."""

import json
from pathlib import Path
from typing import Annotated

import typer

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
    from tqdm import tqdm

    from flows.progress import listening
    from flows.restore import restore

    bar = tqdm(total=0, unit="shard", desc=f"{job.task_label()} {job.dataset_name()}", dynamic_ncols=True)

    def on_shard(done: int, total: int, item: object) -> None:
        if done == 0:
            bar.reset(total=total)  # the clock starts with the shards, not with ingest and server start-up
        bar.n = done
        bar.refresh()

    with listening(on_shard):
        state = restore(job=job, return_state=True)
    bar.close()
    summary = state.result(raise_on_failure=False)
    summary = summary if isinstance(summary, dict) else {}
    if state.is_completed():
        typer.echo(
            f"completed: {summary['restored']} shard(s) restored, {summary['skipped']} already done; "
            f"report: {summary['report']}"
        )
        return
    typer.echo(f"failed: {state.message}", err=True)
    for shard, reason in sorted(summary.get("failed", {}).items()):
        typer.echo(f"  shard {shard}: {reason}", err=True)
    typer.echo(f"re-run `diffpir run {job_file}` to retry only what is not done", err=True)
    raise typer.Exit(1)


def _effective_sampler(job: Job) -> str:
    """The sampler settings the job runs with and where each value came from, as YAML comments."""
    settings = job.sampler_settings()
    values = settings.config.model_dump(mode="json")
    lines = [f"# effective sampler settings ({settings.config.nfes} network calls per image):"]
    lines += [f"#   {name + ':':<17} {values[name]!s:<8} from {source}" for name, source in settings.sources.items()]
    return "\n".join(lines) + "\n"


def status(
    output: Annotated[str, typer.Argument(help="output store of a job (local path or s3://...)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", "-o", help="fsspec option key=value, e.g. endpoint_url=...")
    ] = None,
) -> None:
    """List the shards of a job's output: done, failed (with reason), pending, quarantined inputs."""
    from flows.status import job_status

    options = {}
    for item in storage_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            typer.echo(f"error: --storage-option {item!r}: expected key=value", err=True)
            raise typer.Exit(2)
        options[key] = value
    try:
        report = job_status(output, options)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    counts = report["counts"]
    typer.echo(
        f"{output}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending, "
        f"{counts['quarantined']} quarantined input(s)"
    )
    for shard in report["shards"]:
        line = f"  shard {shard['id']:>5}  {shard['state']:<8} attempts={shard['attempts']}"
        if shard["finished_at"]:
            line += f"  finished {shard['finished_at']}"
        if shard["error"]:
            line += f"  error: {shard['error']}"
        typer.echo(line)
