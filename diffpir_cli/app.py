"""The ``diffpir`` command line. Each command group lives in its own module and registers itself."""

import typer

from diffpir_cli import data, demo, jobs, models, train

app = typer.Typer(
    name="diffpir",
    help="Restore image datasets with DiffPIR: ingest, run jobs, watch status, export, manage priors.",
    no_args_is_help=True,
    add_completion=False,
)

for module in (jobs, data, models, train, demo):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
