"""Our DPS, DDRM and DPIR against their official code's outputs on the same network, operator and noise
(tests/data/methods/README.md says how each was run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffpir_core.sampling import method_config, restore_with

VECTORS = Path(__file__).resolve().parents[3] / "data" / "methods" / "official_vectors.pt"
CASES = [f"{c['method']}:{c['case']}" for c in torch.load(VECTORS, weights_only=True)["cases"]]


@pytest.mark.parametrize("case_id", CASES)
def test_matches_official_code(case_id, official_vectors, vector_network, operator_from_spec):
    """Max |ours − official| within 10× what was measured when the vectors were made (≥ 1e-5), which
    leaves room for other float32 convolution rounding; measured values are 0 – 5.5e-4 (README)."""
    case = next(c for c in official_vectors["cases"] if f"{c['method']}:{c['case']}" == case_id)
    settings = dict(case["config"])
    noise_sigma = settings.pop("noise_sigma", 0.0)
    config = method_config(case["method"], settings, noise_sigma=noise_sigma)
    ours = restore_with(
        case["method"],
        vector_network(case["network"]),
        operator_from_spec(case["operator"]),
        case["y"],
        config,
        generator=[torch.Generator().manual_seed(case["seed"])],
    )
    tolerance = max(10 * case["max_abs_diff_at_generation"], 1e-5)
    assert float((ours - case["official"]).abs().max()) <= tolerance
