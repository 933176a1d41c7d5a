"""Schedule tables, ρ_t and the visited timesteps against the reference (docs/algorithm.md §2–§3, §10.3.1)."""

from __future__ import annotations

import pytest
import torch

from diffpir_core.sampling import Schedule, rho_weight, visited_timesteps

STORED_NAMES = {
    "betas": "betas",
    "alphas_cumprod": "alphas_cumprod",
    "sqrt_alphas_cumprod": "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod": "sqrt_1m_alphas_cumprod",
    "sigma_bar": "reduced_alpha_cumprod",
}


def test_linear_schedule_matches_reference_tables(components):
    ours = Schedule.linear()
    stored = components["schedule"]
    # β and the sequential float32 cumprod are exact by construction
    assert torch.equal(ours.betas, stored["betas"])
    assert torch.equal(ours.alphas_cumprod, stored["alphas_cumprod"])
    # roots: bitwise with PyTorch's CPU sqrt, ±1 ulp where a platform rounds its sqrt (or the vectorised kernel
    # its division) otherwise; σ̄ = √(1−ᾱ)/√ᾱ combines two roots and a quotient: ±2 ulps (measured on an Intel
    # Xeon with AVX2 kernels: 2 ulps)
    for name, ulps in (("sqrt_alphas_cumprod", 1), ("sqrt_one_minus_alphas_cumprod", 1), ("sigma_bar", 2)):
        ulp = ulps * torch.finfo(torch.float32).eps * stored[STORED_NAMES[name]].abs()
        assert ((getattr(ours, name) - stored[STORED_NAMES[name]]).abs() <= ulp).all(), name


def test_sequential_cumprod_differs_from_torch_cumprod(components):
    """Why the schedule uses NumPy's sequential product: torch.cumprod rounds differently."""
    alphas = 1 - Schedule.linear().betas
    assert not torch.equal(torch.cumprod(alphas, 0), components["schedule"]["alphas_cumprod"])


def test_spec_values():
    s = Schedule.linear()
    assert float(s.alphas_cumprod[0]) == pytest.approx(0.9999, abs=1e-7)
    assert float(s.sigma_bar[999]) == pytest.approx(157.407, abs=1e-3)
    assert float(s.sqrt_alphas_cumprod[999]) == pytest.approx(0.0063528, abs=1e-7)
    for t, value in {26: 0.09870, 57: 0.19876, 114: 0.39089, 250: 0.95803, 500: 3.4430, 750: 17.379}.items():
        assert float(s.sigma_bar[t]) == pytest.approx(value, rel=1e-4)


def test_from_tensors_keeps_stored_bits(stored_schedule, components):
    for name, stored in STORED_NAMES.items():
        assert torch.equal(getattr(stored_schedule, name), components["schedule"][stored])


def test_from_tensors_refuses_mismatched_tables(components):
    s = components["schedule"]
    with pytest.raises(ValueError, match="same length"):
        Schedule.from_tensors(
            betas=s["betas"][:10],
            alphas_cumprod=s["alphas_cumprod"],
            sqrt_alphas_cumprod=s["sqrt_alphas_cumprod"],
            sqrt_one_minus_alphas_cumprod=s["sqrt_1m_alphas_cumprod"],
            sigma_bar=s["reduced_alpha_cumprod"],
        )


@pytest.mark.parametrize("key", ["quad_10", "uniform_10", "quad_20", "uniform_20", "quad_100", "uniform_100"])
def test_visited_timesteps_match_reference(key, components):
    skip_type, n = key.split("_")
    assert visited_timesteps(int(n), skip_type) == components["seq"][key]["t"]


def test_visited_step_counts_and_t_start():
    assert len(visited_timesteps(100, "quad")) == 100
    assert len(visited_timesteps(100, "uniform")) == 101  # the reference appends 999
    assert visited_timesteps(10, "quad", t_start=114) == [57, 0]
    assert visited_timesteps(100, "quad", t_start=114)[0] == 112
    with pytest.raises(ValueError, match="skip_type"):
        visited_timesteps(10, "linear")
    with pytest.raises(ValueError, match="iter_num"):
        visited_timesteps(0)


@pytest.mark.parametrize(
    "name", ["sr_x4_bicubic", "deblur_gaussian", "deblur_motion", "inpaint_box", "inpaint_random"]
)
def test_trace_timesteps_exact_and_rho_to_ulps(name, ref_cases):
    """Visited t exactly; ρ = fl(1/fl(σ̄²))·w bitwise where σ̄ is (the reference machine), else within the
    relative error of a σ̄ off by 2 ulps: 2·2 + 2 roundings ≤ 6·eps."""
    case = ref_cases.case(name)
    hp = case["hp"]
    steps = visited_timesteps(hp["iter_num"], hp["skip_type"], hp["t_start"])
    weight = rho_weight(hp["lambda_"], [hp["noise_level_img"]])
    schedule = Schedule.linear()
    assert [s["t_i"] for s in case["trace"]] == steps
    assert [s["t_im1"] for s in case["trace"]] == steps[1:] + [None]
    eps = torch.finfo(torch.float32).eps
    for t, step in zip(steps, case["trace"], strict=True):
        assert abs(float(schedule.rho(t, weight)) - step["rho"]) <= 6 * eps * step["rho"], t


def test_rho_examples_and_per_image_weights():
    s = Schedule.linear()
    weight = rho_weight(2.0, [0.05, 0.0])  # σ = 0 is floored at 0.001
    rho = s.rho(999, weight)
    assert rho.shape == (2,) and rho.dtype == torch.float32
    assert float(rho[0]) == pytest.approx(2.0e-7, rel=1e-2)
    assert float(rho[1]) == pytest.approx(2.0 * 0.001**2 / 157.407**2, rel=1e-4)
    assert float(s.rho(5, rho_weight(2.0, [0.05]))) == pytest.approx(5.56, abs=0.01)
    assert float(s.rho(5, rho_weight(7.0, [0.05]))) == pytest.approx(19.5, abs=0.1)


def test_rho_weight_takes_sigma_as_float64():
    """A float32 σ (0.05 -> 0.0500000007) would move ρ by an ulp: rho_weight rounds only once."""
    exact = rho_weight(2.0, [0.05])
    via_float32 = torch.tensor(2.0 * float(torch.tensor(0.05, dtype=torch.float32)) ** 2, dtype=torch.float32)
    assert float(exact) == float(torch.tensor(2.0 * 0.05**2, dtype=torch.float32))
    assert float(exact) != float(via_float32)


def test_nearest_timestep_of_measurement_noise():
    s = Schedule.linear()
    assert s.nearest_timestep(2 * 0.05) == 26
    assert s.nearest_timestep(0.0) == 0
