"""Fixtures of the operator tests: the reference component vectors and the five reference cases."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffpir_core.operators import Blur, Inpainting, Operator, SuperResolution

CASES = ("sr_x4_bicubic", "deblur_gaussian", "deblur_motion", "inpaint_box", "inpaint_random")


def _hwc_to_batch(a: torch.Tensor) -> torch.Tensor:
    return a.permute(2, 0, 1)[None].contiguous()


def _uint8_to_float(u8: torch.Tensor) -> torch.Tensor:
    return _hwc_to_batch((u8.to(torch.float64) / 255).to(torch.float32))


@dataclass
class ReferenceCase:
    """One reference case with its measurement, ground truth and operator in our conventions."""

    raw: dict
    y: torch.Tensor  # (1, 3, h, w) image space
    gt: torch.Tensor  # (1, 3, 64, 64) fl32(gt / 255)
    operator: Operator


@pytest.fixture(params=CASES)
def case_name(request) -> str:
    """Each of the five reference case names in turn."""
    return request.param


@pytest.fixture(scope="session")
def components(reference_dir: Path) -> dict:
    """``components.pt``: reference kernels, masks, resize outputs and data-step vectors (docs/algorithm.md §10.2)."""
    return torch.load(reference_dir / "components.pt", weights_only=True)


@pytest.fixture(scope="session")
def hwc_to_batch():
    """(H, W, 3) reference array -> contiguous (1, 3, H, W)."""
    return _hwc_to_batch


@pytest.fixture(scope="session")
def uint8_to_float():
    """uint8 (H, W, 3) -> fl32(v / 255) (float64 division, docs/algorithm.md §6.1) as (1, 3, H, W)."""
    return _uint8_to_float


@pytest.fixture(scope="session")
def reference_case(reference_dir: Path):
    """Loader of a reference case by name (cached), with the operator the case used."""
    cache: dict[str, ReferenceCase] = {}

    def load(name: str) -> ReferenceCase:
        if name not in cache:
            raw = torch.load(reference_dir / f"{name}.pt", weights_only=True)
            op = raw["op"]
            if raw["task"] == "sr":
                operator: Operator = SuperResolution(raw["hp"]["sf"], kernel=op["k"])
            elif raw["task"] == "deblur":
                operator = Blur(op["k"])
            else:
                operator = Inpainting(_hwc_to_batch(op["mask"]))
            cache[name] = ReferenceCase(raw, _hwc_to_batch(raw["y_img_L"]), _uint8_to_float(raw["gt_uint8"]), operator)
        return cache[name]

    return load
