"""CLI commands ``diffpir models list | download NAME | verify PATH``: fetch and check the priors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffpir_core.models.checkpoint import CheckpointError, inspect_checkpoint
from diffpir_core.models.download import DownloadError, download_preset
from diffpir_core.models.presets import (
    MODEL_DIR_ENV,
    PRESETS,
    PresetError,
    Source,
    default_model_dir,
    downloadable_names,
    get_preset,
)

models_app = typer.Typer(
    help=f"Manage the diffusion priors (model directory: ${MODEL_DIR_ENV} or ~/.cache/diffpir-flow/models).",
    no_args_is_help=True,
)

ModelDirOption = Annotated[
    Path | None, typer.Option("--model-dir", help=f"Model directory (default: ${MODEL_DIR_ENV} or the user cache).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@models_app.command("list")
def list_models(model_dir: ModelDirOption = None) -> None:
    """Show every preset, whether its weights are present, and where they come from."""
    directory = model_dir or default_model_dir()
    typer.echo(f"model directory: {directory}")
    for preset in PRESETS.values():
        path = preset.path(directory)
        state = f"present ({path.stat().st_size:,} bytes)" if path.is_file() else "missing"
        typer.echo(f"\n{preset.name}: {preset.description}")
        typer.echo(f"  file:    {path}  [{state}]")
        if preset.num_params:
            typer.echo(f"  params:  {preset.num_params:,} (float32 file >= {preset.param_bytes:,} bytes)")
        typer.echo(f"  sha256:  {preset.sha256 or 'not recorded'}")
        for source in preset.sources:
            typer.echo(f"  source:  {source.url}\n           {source.note}")


@models_app.command("download")
def download_model(
    name: Annotated[str, typer.Argument(help="Preset to fetch: " + ", ".join(downloadable_names()))],
    model_dir: ModelDirOption = None,
    url: Annotated[str | None, typer.Option(help="Fetch from this URL instead of the preset's sources.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the file (overrides the preset's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download a preset's checkpoint (resumable, checksummed) into the model directory."""
    try:
        preset = get_preset(name)
        sources = [Source(url=url, kind="http", note="given with --url")] if url else None
        path = download_preset(preset, model_dir=model_dir, sources=sources, sha256=sha256, progress=not quiet)
        info = inspect_checkpoint(path)
    except (PresetError, DownloadError, CheckpointError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{path}\n  sha256 {info.sha256}\n  {info.num_params:,} parameters, matches preset: {info.matches}")
    if info.matches != preset.name:
        typer.echo(
            f"warning: the file does not have the tensor names and shapes of {preset.name}; "
            f"check it with `diffpir models verify {path}`",
            err=True,
        )


@models_app.command("verify")
def verify_model(
    path: Annotated[Path, typer.Argument(help="Checkpoint file (.pt, .pth or .safetensors).")],
    preset: Annotated[str | None, typer.Option(help="Require the file to be this preset.")] = None,
) -> None:
    """Check that a file is a loadable checkpoint (not an HTML page, no pickled code) and which preset it is."""
    try:
        expected = get_preset(preset) if preset else None
        info = inspect_checkpoint(path)
    except (PresetError, CheckpointError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{info.path}: {info.size:,} bytes, sha256 {info.sha256}")
    typer.echo(f"  {info.num_tensors} tensors, {info.num_params:,} parameters, dtypes {', '.join(info.dtypes)}")
    if info.matches is None:
        near = f"; closest is {info.closest} ({info.closest_fraction:.0%} of tensors agree)" if info.closest else ""
        raise _fail(f"the tensor names and shapes match no preset{near}")
    typer.echo(f"  matches preset {info.matches}")
    if expected is not None and info.matches != expected.name:
        raise _fail(f"expected {expected.name}, but the file is {info.matches}")
    official = PRESETS[info.matches].sha256
    if official and official != info.sha256:
        raise _fail(f"the sha256 differs from the official {info.matches} file ({official})")
    typer.echo("  OK" + ("" if official else " (no official sha256 recorded to compare with)"))


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to the ``diffpir`` app."""
    app.add_typer(models_app, name="models")
