"""The ``diffpir`` command line. Each command group lives in its own module and registers itself."""

import typer

from flows import cli_data, cli_demo, cli_jobs, cli_models, cli_train

app = typer.Typer(
    name="diffpir",
    help="Restore image datasets with DiffPIR: ingest, run jobs, watch status, export, manage priors.",
    no_args_is_help=True,
    add_completion=False,
)

for module in (cli_jobs, cli_data, cli_models, cli_train, cli_demo):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
