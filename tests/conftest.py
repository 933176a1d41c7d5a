"""Fixtures shared by the whole suite: where the reference test vectors live, GPU skipping."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _testvectors_dir() -> Path:
    env = os.environ.get("DIFFPIR_TESTVECTORS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "testvectors"


@pytest.fixture(scope="session")
def testvectors() -> Path:
    """The folder of reference test vectors (``../shared/testvectors``); skips when it is absent."""
    path = _testvectors_dir()
    if not path.is_dir():
        pytest.skip(
            f"reference test vectors not found at {path}: set DIFFPIR_TESTVECTORS to the "
            "shared/testvectors folder to run this test"
        )
    return path


@pytest.fixture(scope="session")
def reference_dir(testvectors: Path) -> Path:
    """``testvectors/diffpir_reference``: the reference sampler's own outputs on a tiny UNet."""
    path = testvectors / "diffpir_reference"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the DiffPIR reference vectors are needed for this test")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
