"""DPIR: the official σ/ρ schedule, the flips and the σ ↔ t mapping (batching and the exact-ε oracle:
test_contract.py)."""

from __future__ import annotations

import pytest
import torch

from diffpir_core.sampling import METHODS, DPIRPnPConfig, dpir_pnp_sample, reference_schedule
from diffpir_core.sampling.dpir import augment, deaugment
from diffpir_core.task_kinds import task_kind


def test_schedule_is_the_official_one():
    """Values of cszn/DPIR utils_pnp.get_rho_sigma(max(0.255/255, 0.05), 8, 49, 0.05·255, w=1) run with
    NumPy 2 (its ρ then rounds in float32; ours are float64, equal after the float32 cast)."""
    sigmas, rhos = DPIRPnPConfig().schedule(0.05)
    assert sigmas[:3] == [0.1921568661928177, 0.15853652358055115, 0.13079850375652313]
    assert sigmas[-1] == 0.05000000074505806
    official_rhos = [0.01557241752743721, 0.022877532988786697, 0.22999998927116394]
    assert [float(torch.tensor(r, dtype=torch.float32)) for r in (rhos[0], rhos[1], rhos[-1])] == official_rhos
    sr_sigmas, _ = DPIRPnPConfig(iter_num=24, sigma_end_floor=2 / 255).schedule(0.0)
    assert len(sr_sigmas) == 24 and sr_sigmas[-1] == pytest.approx(2 / 255, rel=1e-7)


def test_defaults():
    config = DPIRPnPConfig()
    assert (config.iter_num, config.sigma_start, config.rho_weight, config.x8) == (8, 49 / 255, 0.23, True)
    assert config.nfes == 8 and not METHODS["dpir"].requires_svd
    assert task_kind("sr").PRESETS["dpir"]["iter_num"] == 24 and task_kind("inpaint").PRESETS["dpir"]["iter_num"] == 40


@pytest.mark.parametrize("mode", range(8))
def test_deaugment_inverts_augment(mode):
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    assert torch.equal(deaugment(augment(x, mode), mode), x)


def test_denoiser_runs_at_the_timestep_of_each_sigma(small_task, vector_unet):
    op, y = small_task("deblur", 0.05)
    config = DPIRPnPConfig(noise_sigma=0.05)
    seen = []
    dpir_pnp_sample(vector_unet, op, y, config, callback=lambda step: seen.append(step.t))
    schedule = reference_schedule()
    assert seen == [schedule.nearest_timestep(2 * s) for s in config.schedule(0.05)[0]]
