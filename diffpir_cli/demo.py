"""CLI command ``diffpir demo``: the real restoration job on the held-out images, no download needed.

It writes 64x64 tiles of the held-out photos (never seen by the demo prior) into ``<out>/input``, then
runs the ``restore`` flow in evaluate mode three times — SR x4 (σ = 0.05), Gaussian deblurring
(σ = 0.05) and box inpainting — with the shipped ``demo`` prior, each into its own local Zarr output
under ``<out>``, and prints a summary table and the path of an index page (``<out>/report.html``) with
the tasks' table (baseline and gain included) and each task's card: samples with crops and histograms.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

DEMO_TILES: tuple[str, ...] = ("astronaut_0", "astronaut_1", "coffee_2", "coffee_4", "chelsea_1", "chelsea_4")
"""Held-out tiles of the demo: two 64x64 tiles of each held-out photo (face, suit, cup, saucer, eye, nose)."""

DEMO_TASKS: dict[str, dict[str, Any]] = {
    "sr4": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
    "deblur": {"kind": "deblur", "kernel": "gaussian", "kernel_size": 15, "kernel_std": 1.6, "noise_sigma": 0.05},
    "inpaint": {"kind": "inpaint", "mask": "box", "box_fraction": 0.5, "noise_sigma": 0.0},
}
"""The demo's three tasks (job ``task`` sections); the blur is the quality check's (docs/quality.md)."""


def write_demo_inputs(folder: Path, names: tuple[str, ...] = DEMO_TILES) -> list[Path]:
    """Write the named held-out tiles as PNG files into ``folder`` (replacing stale ones)."""
    from PIL import Image

    from diffpir_core.training import held_out_tiles

    tiles = held_out_tiles()
    unknown = sorted(set(names) - set(tiles))
    if unknown:
        raise ValueError(f"unknown demo tile(s) {unknown}; held-out tiles are {sorted(tiles)}")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        Image.fromarray(tiles[name]).save(path)
        paths.append(path)
    return paths


def demo_job(root: Path, label: str, *, prior: str = "demo", iter_num: int | None = None, images: int = 6) -> Any:
    """The demo's job for task ``label`` (a key of DEMO_TASKS): input ``<root>/input``, output ``<root>/<label>``."""
    from diffpir_core.runs.job import parse_job

    task = DEMO_TASKS[label]
    sampler = {} if iter_num is None else {"iter_num": iter_num}
    return parse_job(
        {
            "input": str(root / "input"),
            "output": str(root / label),
            "mode": "evaluate",
            "task": task,
            "prior": prior,
            **({"sampler": sampler} if sampler else {}),
            "shard_size": images,
            "batch_size": images,
            "device": "auto",
            "runner": {"kind": "local"},
            "metrics": ["psnr", "ssim"],
            "seed": 0,
            "name": "demo",
            "report": {"samples": images},
        }
    )


def _index_html(entries: list[dict[str, Any]]) -> str:
    """The demo's page: one table of the tasks (with the baseline and the gain), then each task's card
    (samples with crops, histograms) and a link to its full report."""
    from diffpir_core.reporting import render_index

    return render_index(
        "diffpir-flow demo",
        "Held-out images (never seen by the demo prior), evaluate mode, DiffPIR with the shipped demo prior, "
        "against each task's classical baseline on the same measurements.",
        [entry["summary"] for entry in entries],
        [(entry["report_rel"], entry["card"]) for entry in entries],
    )


def demo(
    out: Annotated[
        Path, typer.Option(help="Folder of the demo: input images, one output store per task, reports.")
    ] = Path("runs/demo"),
    iter_num: Annotated[
        int | None,
        typer.Option(
            help="Sampler steps for every task (default: the prior card's "
            "tuned values, docs/quality.md: 100 for each task)."
        ),
    ] = None,
    images: Annotated[int, typer.Option(min=1, max=len(DEMO_TILES), help="How many held-out tiles to restore.")] = len(
        DEMO_TILES
    ),
    tasks: Annotated[
        list[str] | None, typer.Option("--task", help=f"Task(s) to run: {', '.join(DEMO_TASKS)} (default: all).")
    ] = None,
    prior: Annotated[str, typer.Option(help="Prior preset or checkpoint path.")] = "demo",
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="torch CPU threads. 1 by default: on a shared 2-core "
            "machine more threads spin against each other and run ~10x slower.",
        ),
    ] = 1,
) -> None:
    """Run the demo job: restore held-out images (SR x4, deblurring, box inpainting) through the Prefect flow."""
    labels = tasks or list(DEMO_TASKS)
    unknown = sorted(set(labels) - set(DEMO_TASKS))
    if unknown:
        typer.echo(f"error: unknown demo task(s) {unknown}: choose from {', '.join(DEMO_TASKS)}", err=True)
        raise typer.Exit(2)
    import torch

    from diffpir_flow.cli.server import start_temporary_server, stop_when_recorded
    from diffpir_flow.cli.tables import render, summary_row
    from diffpir_flow.flows.run import run as run_flow

    torch.set_num_threads(threads)
    started = time.perf_counter()
    out = out.resolve()
    inputs = write_demo_inputs(out / "input", DEMO_TILES[:images])
    typer.echo(f"wrote {len(inputs)} held-out 64x64 images to {out / 'input'}")
    rows: list[dict[str, Any]] = []
    flow_runs = []
    server = (
        start_temporary_server()
    )  # stopped below once it recorded every task run (stopped at exit, it logs tracebacks)
    for label in labels:
        job = demo_job(out, label, prior=prior, iter_num=iter_num, images=images)
        typer.echo(f"restoring: {job.task_label()} ({job.sampler_config().iter_num} steps) -> {job.output}")
        task_start = time.perf_counter()
        state = run_flow(job=job, return_state=True)
        flow_runs.append(state.state_details.flow_run_id)
        result = state.result(raise_on_failure=False)
        if not state.is_completed():
            typer.echo(f"error: the {label} job failed: {state.message}; re-run `diffpir demo` to retry it", err=True)
            raise typer.Exit(1)
        report = Path(result["report"])
        summary = json.loads(report.with_name("summary.json").read_text())
        rows.append(
            {
                "task": summary["task"],
                "images": summary["images"],
                "nfes": summary["nfes"],
                "psnr": summary["metrics"]["psnr"]["mean"],
                "ssim": summary["metrics"]["ssim"]["mean"],
                "gain": summary["metrics"]["gain_psnr"]["mean"],
                "baseline": summary["baseline"]["method"],
                "seconds": time.perf_counter() - task_start,
                "summary": summary,
                "card": report.with_name("report-card.html").read_text(),
                "report_rel": str(report.relative_to(out)),
            }
        )
    if server is not None:
        stop_when_recorded(server, flow_runs)
    index = out / "report.html"
    index.write_text(_index_html(rows))
    typer.echo("\n" + render([summary_row(r["summary"], seconds=r["seconds"]) for r in rows]))
    typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s; report: {index}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``diffpir`` app."""
    app.command("demo")(demo)
