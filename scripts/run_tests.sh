#!/usr/bin/env bash
# The linter and the formatter check, then the whole test suite, offline, with a throw-away Prefect home. pytest's exit code is
# passed on unchanged, so "no tests collected" (exit 5) fails the run.
set -euo pipefail
venv="${1:-.venv}"
shift || true
export PREFECT_HOME="$(mktemp -d)/prefect"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore
export PREFECT_UI_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export DIFFPIR_MODEL_DIR="${DIFFPIR_MODEL_DIR:-$(mktemp -d)/models}"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest "$@"
