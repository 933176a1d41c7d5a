"""DPIR: the official σ/ρ schedule, the flips, the σ ↔ t mapping, the exact-ε oracle and batching."""

from __future__ import annotations

import pytest
import torch

from diffpir_core.metrics import float_to_uint8, psnr
from diffpir_core.sampling import DPIRPnPConfig, dpir_pnp_sample, reference_schedule
from diffpir_core.sampling.dpir import OFFICIAL_TASK_SETTINGS, augment, deaugment


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
    assert config.nfes == 8 and not DPIRPnPConfig.requires_svd
    assert OFFICIAL_TASK_SETTINGS["sr"]["iter_num"] == 24 and OFFICIAL_TASK_SETTINGS["inpaint"]["iter_num"] == 40


@pytest.mark.parametrize("mode", range(8))
def test_deaugment_inverts_augment(mode):
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    assert torch.equal(deaugment(augment(x, mode), mode), x)


def test_denoiser_runs_at_the_timestep_of_each_sigma(small_task, vector_unet):
    op, y = small_task("deblur", 0.05)
    config = DPIRPnPConfig(noise_sigma=0.05)
    seen = []
    dpir_pnp_sample(vector_unet, op, y, config, callback=lambda k, t, *_: seen.append(t))
    schedule = reference_schedule()
    assert seen == [schedule.nearest_timestep(2 * s) for s in config.schedule(0.05)[0]]


@pytest.mark.parametrize("task", ["sr", "deblur", "inpaint"])
def test_exact_oracle_recovers_the_image(task, small_task, oracle_of, clean32):
    """ε* makes the denoiser return the ground truth (without the flips, which the oracle cannot
    follow): the uint8 result is the ground truth's (≥ 60 dB; measured identical)."""
    op, y = small_task(task, 0.05 if task != "inpaint" else 0.0)
    config = DPIRPnPConfig(noise_sigma=0.05 if task != "inpaint" else 0.0, x8=False, **OFFICIAL_TASK_SETTINGS[task])
    out = dpir_pnp_sample(oracle_of(clean32), op, y, config)
    assert float(psnr(float_to_uint8(out), float_to_uint8(clean32))[0]) >= 60.0


def test_batch_equals_single_images(small_task, vector_unet):
    """Per-image noise levels give per-image σ_k, ρ_k and timesteps: a batch of 2 is 2 single runs."""
    op, y = small_task("sr", 0.0)
    y2 = torch.cat([y, y.flip(-1)])
    sigmas = [0.01, 0.05]
    batch = dpir_pnp_sample(vector_unet, op, y2, DPIRPnPConfig(noise_sigma=sigmas))
    singles = torch.cat([dpir_pnp_sample(vector_unet, op, y2[i : i + 1], DPIRPnPConfig(noise_sigma=s)) for i, s in enumerate(sigmas)])
    assert float((batch - singles).abs().max()) <= 1e-4
