"""The data step against the reference's own numbers (docs/algorithm.md §10.3.2 and the per-step traces)."""

import pytest
import torch

from diffpir_core.operators import Blur, SuperResolution

ROUNDING_FACTOR = 4
"""Ours and the reference each round the float32 FFT solve their own way (the FFT library and CPU decide the
order), each missing the exact solution by about what ours misses it by here, |float32 − float64| (S64). So
|ours − reference| ≤ 2·S64 up to how much the two machines' roundings differ in size; 4·S64 covers a factor 2
there. Measured: bitwise on the reference's machine; ≤ 1.2·S64 on an Intel Xeon whose FFT rounds differently
(τ = 1e-4 divides by τ: 5e-5 against S64 = 8e-5)."""


def _float64_gap(float32: torch.Tensor, float64: torch.Tensor) -> float:
    return float((float64 - float32.double()).abs().max())


@pytest.mark.parametrize("name", ["data_solution_sr_x4", "data_solution_deblur_gauss"])
def test_fft_solution_matches_reference_for_every_tau(components, name):
    # docs/algorithm.md §10.3.2: ≤ 1e-5 for tau ≥ 0.05, tau = 1e-4 only with the exact op order; bitwise at all
    # four where the platform's FFT rounds as the reference's did, within 4·S64 anywhere (ROUNDING_FACTOR).
    vec = components[name]
    op = SuperResolution(vec["sf"], kernel=vec["k"]) if vec["sf"] > 1 else Blur(vec["k"])
    term, term64 = op.prepare(vec["y"]), op.prepare(vec["y"].double())
    for tau, expected in vec["out_by_tau"].items():
        tau32 = torch.tensor(tau, dtype=torch.float32).reshape(1, 1, 1, 1)
        x_p = term.solve(vec["x"], tau32)
        bound = ROUNDING_FACTOR * _float64_gap(x_p, term64.solve(vec["x"].double(), tau32.double()))
        diff = float((x_p - expected).abs().max())
        assert diff <= bound, f"tau={tau}: max |diff| {diff:.3e} > {bound:.3e}"


def test_teacher_forced_x0_hat_matches_reference(reference_case, case_name):
    # From the reference x̃0 and rho of every non-final step, prox + g-step (g = 1) gives the reference x̂0:
    # bitwise where the platform's FFT rounds as the reference's did, within 4·S64 anywhere (ROUNDING_FACTOR).
    case = reference_case(case_name)
    term, term64 = case.operator.prepare(case.y), case.operator.prepare(case.y.double())
    g = case.raw["hp"]["guidance_scale"]
    for step in case.raw["trace"][:-1]:
        x0, rho = step["x0_model"], torch.tensor(step["rho"], dtype=torch.float32)
        x0_hat = x0 + g * (term.prox(x0, rho) - x0)
        exact = x0.double() + g * (term64.prox(x0.double(), rho.double()) - x0.double())
        diff, bound = float((x0_hat - step["x0_hat"]).abs().max()), ROUNDING_FACTOR * _float64_gap(x0_hat, exact)
        assert diff <= bound, f"t={step['t_i']}: {diff:.3e} > {bound:.3e}"


def test_sr_init_rebuilds_reference_x_T(components, reference_case):
    # docs/algorithm.md §4.2: x_T = a_999 · P(bicubic ×4 of y) + b_999 · n.
    case = reference_case("sr_x4_bicubic")
    a = components["schedule"]["sqrt_alphas_cumprod"][999]
    b = components["schedule"]["sqrt_1m_alphas_cumprod"][999]
    x_up = case.operator.init_image(case.y)
    x_T = a * (x_up * 2 - 1) + b * case.raw["x_T_noise"]
    assert case.operator.init_is_noisy_measurement is False
    assert (x_T - case.raw["x_T"]).abs().max() <= 1e-6
