"""CLI commands ``diffpir train-prior`` and ``diffpir export-prior``: train the project's own small prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise _fail(f"--device {device} asked for, but no CUDA device is visible: use --device cpu")
    return device


def train_prior(
    run_dir: Annotated[
        Path,
        typer.Option(
            help="Folder of the run: checkpoint, log.jsonl, config.json. An existing checkpoint there is resumed."
        ),
    ] = Path("runs/train-prior"),
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML file of TrainConfig fields (model, images, crop, batch_size, lr, steps, seed, ...); "
            "options below override it."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Total optimizer steps of the run.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per step.")] = None,
    crop: Annotated[int | None, typer.Option(help="Training patch size in px.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    num_channels: Annotated[int | None, typer.Option(help="UNet base width (multiple of 32).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of all training randomness.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop (with a checkpoint) after this much wall time; run again to resume.")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="After training, write the EMA weights here (.safetensors) with a model card next to it (.json)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train (or resume) a guided-diffusion prior on the images bundled with scikit-image.

    DDPM ε-objective with learned variance on the linear 1000-step schedule, EMA weights, a checkpoint
    every few hundred steps; stop it at any time (Ctrl-C loses only the steps since the last
    checkpoint, SIGTERM or --max-minutes save one) and run the same command again to continue.
    """
    import torch

    from diffpir_core.training import TrainConfig, train
    from diffpir_core.training.export import export_prior
    from diffpir_core.training.trainer import ConfigMismatchError

    fields: dict[str, Any] = (yaml.safe_load(config.read_text()) or {}) if config else {}
    overrides = {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if num_channels is not None:
        fields["model"] = {**TrainConfig().model, **fields.get("model", {}), "num_channels": num_channels}
    try:
        train_config = TrainConfig(**fields)
    except ValidationError as exc:
        raise _fail(f"invalid training config:\n{exc}") from exc
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        state = train(
            train_config,
            run_dir,
            device=_resolve_device(device),
            max_seconds=None if max_minutes is None else 60.0 * max_minutes,
            progress=not quiet,
        )
    except ConfigMismatchError as exc:
        raise _fail(str(exc)) from exc
    loss = f", loss {state.last_log['loss']:.4f}" if state.last_log else ""
    verb = "stopped (run again to resume)" if state.stopped_early else "finished"
    typer.echo(
        f"{verb} at step {state.step}/{train_config.steps}{loss}, "
        f"{state.elapsed_seconds / 60:.1f} min in total; checkpoint in {run_dir}"
    )
    if export is not None:
        card = export_prior(run_dir, export)
        typer.echo(f"exported {export} (sha256 {card['sha256'][:12]}…) and its model card")


def export_prior_command(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder (holds checkpoint.pt).")],
    weights: Annotated[Path, typer.Argument(help="Output .safetensors file; the model card goes next to it (.json).")],
) -> None:
    """Export a training run's EMA weights and model card (the form `load_prior` reads)."""
    from diffpir_core.training.export import export_prior

    try:
        card = export_prior(run_dir, weights)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"exported {weights}: step {card['steps']}, final loss {card['final_loss']}, sha256 {card['sha256']}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``diffpir`` app."""
    app.command("train-prior")(train_prior)
    app.command("export-prior")(export_prior_command)
