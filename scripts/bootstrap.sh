#!/usr/bin/env bash
# Create the virtual env and install the project with its dev extras.
# Without a GPU the CPU wheel of torch is installed first, so that nothing pulls a multi-GB CUDA build.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install -q torch
    else
        "$venv/bin/python" -m pip install -q "torch==2.13.0"
    fi
fi
"$venv/bin/python" -m pip install -q -e ".[dev]"
touch "$venv/.installed"
