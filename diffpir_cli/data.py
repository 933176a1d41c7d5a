"""CLI commands for data: ``diffpir ingest`` (images -> Zarr store), ``diffpir export`` (a job's restored images,
or a store's images -> PNG files) and ``diffpir verify`` (every done shard's data against its record).

S3 credentials come from the environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE``);
``--endpoint-url`` (or ``AWS_ENDPOINT_URL``) points at a non-AWS S3 API such as MinIO.
"""

import re
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from tqdm import tqdm

from diffpir_core.io import IMAGES, DatasetStore, SizePolicy, StoreError, export_conflicts, export_images, ingest
from diffpir_core.io.uris import StorageOptions, is_local, join

if TYPE_CHECKING:
    from diffpir_core.runs.uncertainty_report import ExportPart

EndpointOption = Annotated[
    str | None, typer.Option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3 API endpoint (MinIO, moto, ...)")
]


def _options(uri: str, endpoint_url: str | None) -> StorageOptions | None:
    if is_local(uri) or endpoint_url is None:
        return None
    return {"endpoint_url": endpoint_url}


def ingest_command(
    input_uri: Annotated[
        str, typer.Argument(metavar="INPUT", help="folder, s3://bucket/prefix, or Zarr store of images")
    ],
    output: Annotated[str, typer.Argument(metavar="OUTPUT", help="the dataset store to create (path or URL)")],
    size_policy: Annotated[
        SizePolicy, typer.Option(help="native, modcrop, center_crop or resize")
    ] = SizePolicy.NATIVE,
    size: Annotated[int | None, typer.Option(help="working size for center_crop/resize")] = None,
    multiple: Annotated[int, typer.Option(help="height/width multiple for modcrop")] = 1,
    shard_size: Annotated[int, typer.Option(help="images per shard (the unit of work)")] = 64,
    workers: Annotated[int, typer.Option(help="decode threads")] = 4,
    overwrite: Annotated[bool, typer.Option(help="replace an existing store at OUTPUT")] = False,
    endpoint_url: EndpointOption = None,
) -> None:
    """Ingest images into a sharded Zarr v3 dataset store; bad files are quarantined and listed."""
    with tqdm(desc="ingest", unit="file") as bar:
        try:
            summary = ingest(
                input_uri,
                output,
                size_policy=size_policy,
                size=size,
                multiple=multiple,
                shard_size=shard_size,
                workers=workers,
                overwrite=overwrite,
                storage_options=_options(input_uri, endpoint_url),
                store_storage_options=_options(output, endpoint_url),
                progress=bar.update,
            )
        except (StoreError, ValueError, FileNotFoundError) as err:
            raise typer.BadParameter(str(err)) from err
    groups = ", ".join(f"{name}: {count}" for name, count in summary.groups.items()) or "none"
    typer.echo(
        f"ingested {summary.ingested} images into {summary.store} ({summary.shards} shards; groups {groups}) "
        f"in {summary.seconds:.1f} s; quarantined {summary.quarantined}, ignored {summary.ignored} file(s)"
    )
    for line in summary.ignored_lines():
        typer.echo(line)
    for entry in summary.quarantine_sample:
        typer.echo(f"  quarantined {entry.id}: {entry.reason}")
    if summary.quarantined > len(summary.quarantine_sample):
        typer.echo(
            f"  ... and {summary.quarantined - len(summary.quarantine_sample)} more (see quarantine/ in the store)"
        )


def _has_images(store: str, options: StorageOptions | None) -> bool:
    """Whether the store at ``store`` holds ingested ``images`` (a dataset store) rather than only outputs."""
    opened = DatasetStore.open(store, options)
    return any(opened.has_array(group.name, IMAGES) for group in opened.groups()) or not opened.groups()


def export_command(
    store: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE", help="a job output, a job folder OUTPUT/jobs/<hash>, a restored.zarr or a dataset store"
        ),
    ],
    out_uri: Annotated[str, typer.Argument(metavar="OUT_URI", help="folder or s3://bucket/prefix for the PNGs")],
    array: Annotated[
        str | None,
        typer.Option(help="array to export; default: restored for jobs and restored.zarr, images for a dataset store"),
    ] = None,
    job: Annotated[
        str | None, typer.Option("--job", help="job hash prefix, when the output holds several jobs")
    ] = None,
    variant: Annotated[str | None, typer.Option("--variant", help="a comparison's variant by name, e.g. DPS")] = None,
    task: Annotated[str | None, typer.Option("--task", help="a job's task label, e.g. sr4 or inpaint-box")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="every job that matches, each into OUT_URI/<variant>-<task>")
    ] = False,
    what: Annotated[
        Literal["restored", "std", "samples"],
        typer.Option(
            "--what",
            help="a job's restored images (a job with uncertainty: its estimate), its std heatmaps (named "
            "calibrated/uncalibrated, with colour-scale.json and colour-bar.png), or its K posterior samples "
            "(into sample-<k>/)",
        ),
    ] = "restored",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace files of the same names in OUT_URI")] = False,
    endpoint_url: EndpointOption = None,
) -> None:
    """Write a job's restored images (or a store's images) as PNG files named after the original ids."""
    from diffpir_core.runs.done import job_identities  # here: the job plans are only needed by export
    from diffpir_core.runs.plan import export_source, matching_plans
    from diffpir_core.runs.uncertainty_report import export_parts

    options = _options(store, endpoint_url)
    out_options = _options(out_uri, endpoint_url)
    try:
        if every:
            plans = matching_plans(store, options or {}, job, variant, task)
            if plans is None:
                raise ValueError(f"{store} holds no diffpir jobs; --all exports the jobs of a job output")
            labels = {
                plan.job_hash: f"{plan.variant or plan.title.rsplit('-', 1)[0]}-{plan.task or ''}" for plan in plans
            }
            folders = {
                key: join(out_uri, re.sub(r"[^\w.=-]+", "-", label).strip("-")) for key, label in labels.items()
            }
            items = [(plan, folders[plan.job_hash], export_parts(plan, what, options or {})) for plan in plans]
        else:
            located = export_source(store, options or {}, job, variant, task)
            if located is None or array is not None:
                if what != "restored":
                    raise ValueError(f"--what {what} exports a job's uncertainty; {store} is no job output")
                default = "restored" if located is None else located.restored_array
                default = IMAGES if located is None and _has_images(store, options) else default
                source = store if located is None else located.output_store
                identities = (
                    job_identities(located, options or {})
                    if located is not None and array == located.restored_array
                    else None
                )
                _export(source, out_uri, array or default, options, endpoint_url, identities, overwrite)
                return
            items = [(located, out_uri, export_parts(located, what, options or {}))]
        for plan, folder, parts in items:  # every destination checked before anything is written
            for part in parts:
                export_conflicts(
                    plan.output_store,
                    join(folder, part.folder) if part.folder else folder,
                    array=part.array,
                    storage_options=options,
                    out_storage_options=out_options,
                    overwrite=overwrite,
                    identities=part.identities,
                    suffix=part.suffix,
                )
    except (StoreError, ValueError) as err:
        raise typer.BadParameter(str(err)) from err
    for plan, folder, parts in items:
        if every:
            typer.echo(f"{plan.variant or plan.title} on {plan.task}: -> {folder}")
        for part in parts:
            destination = join(folder, part.folder) if part.folder else folder
            _export(
                plan.output_store, destination, part.array, options, endpoint_url, part.identities, overwrite, part
            )


def _export(
    store: str,
    out_uri: str,
    array: str,
    options: StorageOptions | None,
    endpoint_url: str | None,
    identities: dict[str, dict[str, str]] | None,
    overwrite: bool,
    part: "ExportPart | None" = None,
) -> None:
    """Export ``array`` of ``store`` into ``out_uri`` with a progress bar, then say what was written and left out;
    ``identities``: a job's shard identities (only its done shards are exported); ``part``: how a job's uncertainty
    is pictured (its renderer, name suffix and the colour-scale legend written beside the PNGs)."""
    with tqdm(desc="export", unit="image") as bar:
        try:
            summary = export_images(
                store,
                out_uri,
                array=array,
                storage_options=options,
                out_storage_options=_options(out_uri, endpoint_url),
                identities=identities,
                progress=bar.update,
                overwrite=overwrite,
                render=None if part is None else part.render,
                suffix="" if part is None else part.suffix,
            )
            if part is not None and part.legend is not None:
                from diffpir_core.runs.uncertainty_report import write_legend

                write_legend(out_uri, part.legend, _options(out_uri, endpoint_url))
        except (StoreError, ValueError) as err:
            raise typer.BadParameter(str(err)) from err
    typer.echo(
        f"exported {summary.exported} PNGs ({summary.bytes_written / 1e6:.1f} MB) to {summary.out} in "
        f"{summary.seconds:.1f} s"
    )
    if summary.renamed:
        typer.echo(
            f"renamed {summary.renamed} id(s) with unsafe or clashing names (every id -> file: {summary.mapping})"
        )
        for image_id, name in summary.renamed_sample.items():
            typer.echo(f"  {image_id!r} -> {name}")  # repr: ids may hold newlines or control characters
        if summary.renamed > len(summary.renamed_sample):
            typer.echo(f"  ... and {summary.renamed - len(summary.renamed_sample)} more")
    if summary.quarantined:
        typer.echo(f"left out {len(summary.quarantined)} quarantined image(s), not restored:")
        for image_id, reason in list(summary.quarantined.items())[:10]:
            typer.echo(f"  {image_id!r}: {reason}")
    if summary.skipped_shards:
        typer.echo(f"skipped {len(summary.skipped_shards)} shards that are not done: {summary.skipped_shards[:10]}")


def verify_command(
    output: Annotated[
        str, typer.Argument(metavar="OUTPUT", help="output of one or more jobs (local path or s3://...)")
    ],
    forget: Annotated[
        bool, typer.Option("--forget/--keep", help="remove the records of damaged shards so a re-run restores them")
    ] = True,
    endpoint_url: EndpointOption = None,
) -> None:
    """Read every done shard of every job in OUTPUT and check its data against its record's checksum; list damaged
    shards (exit 1 when any)."""
    from diffpir_core.runs.verify import verify_output

    try:
        result = verify_output(output, _options(output, endpoint_url), forget=forget)
    except (FileNotFoundError, StoreError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for item in result.damaged:
        typer.echo(
            f"damaged: job {item['job']} ({item['title']}) {item['array']} shard {item['shard']}: {item['error']}"
        )
    typer.echo(f"checked {result.checked} shard(s) of {result.jobs} job(s): {len(result.damaged)} damaged")
    if result.damaged:
        then = (
            "their records were removed: run the job(s) again to restore them"
            if forget
            else "run `diffpir verify` without --keep"
        )
        typer.echo(f"{then}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``diffpir`` app."""
    app.command("ingest")(ingest_command)
    app.command("export")(export_command)
    app.command("verify")(verify_command)
