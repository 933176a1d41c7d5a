"""Fixtures of the metrics tests: the reference cases and stand-ins for the optional backbones."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from diffpir_core.metrics import fid, perceptual

CASES = ("sr_x4_bicubic", "deblur_gaussian", "deblur_motion", "inpaint_box", "inpaint_random")


@pytest.fixture(scope="session")
def reference_cases(reference_dir: Path) -> dict[str, tuple[dict, dict]]:
    """case name -> (case file contents, its ``summary.json`` entry)."""
    summary = json.loads((reference_dir / "summary.json").read_text())["cases"]
    return {name: (torch.load(reference_dir / f"{name}.pt", weights_only=True), summary[name]) for name in CASES}


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME, so the hub checkpoint cache is ``tmp_path/hub/checkpoints``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(perceptual, "_LOADED", {})
    monkeypatch.setattr(fid, "_LOADED", {})
    return tmp_path


class _StandInLPIPS(torch.nn.Module):
    """Mean squared difference per image; records the value range it was given."""

    def __init__(self, net: str, verbose: bool) -> None:
        super().__init__()
        assert net == "vgg"
        self.seen: list[tuple[float, float]] = []

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.seen.append((float(min(a.min(), b.min())), float(max(a.max(), b.max()))))
        return (a - b).pow(2).mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


class _StandInInception(torch.nn.Module):
    """Returns [B, 2048, 1, 1] pool3-shaped features: the channel means tiled."""

    BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}

    def __init__(self, output_blocks: list[int]) -> None:
        super().__init__()
        assert output_blocks == [3]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        means = x.mean(dim=(2, 3))
        return [means.repeat(1, 2048 // 3 + 1)[:, :2048, None, None]]


@pytest.fixture
def stand_in_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importable ``torchvision``, ``lpips`` and ``pytorch_fid.inception`` stand-ins (the real
    packages need torchvision, which does not import beside this torch): they exercise our wiring —
    import order, weight checks, value ranges, shapes, caching — not the networks."""
    lpips_module = types.ModuleType("lpips")
    lpips_module.LPIPS = _StandInLPIPS
    fid_package = types.ModuleType("pytorch_fid")
    inception_module = types.ModuleType("pytorch_fid.inception")
    inception_module.InceptionV3 = _StandInInception
    for name, module in {
        "torchvision": types.ModuleType("torchvision"),
        "lpips": lpips_module,
        "pytorch_fid": fid_package,
        "pytorch_fid.inception": inception_module,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
