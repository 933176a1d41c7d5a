"""Optional metrics (LPIPS, FID) report why they cannot run instead of raising into a job.

Both need ``torchvision`` (through the ``lpips`` / ``pytorch-fid`` packages of the ``metrics`` extra) and
a backbone weight file in the torch hub cache. Nothing here downloads: a missing file is reported with
its URL and the exact path to put it at, so an offline worker can be pre-seeded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

INSTALL_FIX = (
    "pip install 'diffpir-flow[metrics]' together with a torchvision built for the installed torch "
    "(see docs/metrics.md)"
)


@dataclass(frozen=True)
class MetricUnavailable:
    """A metric that cannot be computed here: which one, why (one line) and how to fix it."""

    metric: str
    reason: str
    fix: str

    @property
    def message(self) -> str:
        return f"{self.metric} unavailable: {self.reason}. Fix: {self.fix}"

    def __str__(self) -> str:
        return self.message


def hub_checkpoint_dir() -> Path:
    """Where torch hub (and so torchvision, lpips, pytorch-fid) caches weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def import_optional(metric: str, module: str) -> ModuleType | MetricUnavailable:
    """Import ``module`` (after torchvision, which it needs) or say why it cannot be imported.

    Any exception counts: a torchvision wheel built for another torch fails with a RuntimeError
    ("operator torchvision::nms does not exist"), not an ImportError.
    """
    for name in ("torchvision", module):
        try:
            loaded = importlib.import_module(name)
        except Exception as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            return MetricUnavailable(metric, f"cannot import {name} ({detail})", INSTALL_FIX)
    return loaded


def missing_weights(metric: str, file_name: str, url: str) -> MetricUnavailable | None:
    """``MetricUnavailable`` when ``file_name`` is not in the hub checkpoint cache, else None."""
    path = hub_checkpoint_dir() / file_name
    if path.is_file():
        return None
    return MetricUnavailable(
        metric,
        f"backbone weights {file_name} are not in the torch hub cache",
        f"download {url} to {path} (or set TORCH_HOME to a folder holding hub/checkpoints/{file_name}), "
        "or pass allow_download=True on a machine with internet access",
    )
