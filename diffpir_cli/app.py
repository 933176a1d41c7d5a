"""The ``diffpir`` command line. Each command group lives in its own module and registers itself."""

import os

# Prefect reads its settings when it is first imported, so the CLI's defaults are set before anything else:
# no start-up telemetry (jobs run offline), and a temporary server that may take a while to start on a busy
# machine (Prefect's own 20 s default fails `diffpir run` on a loaded 2-core box). Users' values win.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# An exported but empty PREFECT_API_URL means "no server" to Prefect's settings, yet its events client then fails on
# every event ("Service 'EventsWorker' failed"): the CLI treats it as unset, so a temporary server is used cleanly.
if not os.environ.get("PREFECT_API_URL", "unset").strip():
    del os.environ["PREFECT_API_URL"]

import typer

from diffpir_flow.cli import data, demo, jobs, models, train

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
