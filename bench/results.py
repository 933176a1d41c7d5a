"""Where benchmarks write their JSON: the measured payload plus the machine and thread count it ran with."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch


def write_results(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with ``machine`` (platform, torch threads and version) and ``finished_at`` to ``path``."""
    machine = {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    document = {**payload, "machine": machine, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
