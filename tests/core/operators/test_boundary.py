"""Camera-like boundaries (operators/boundary.py): the frame's forward model, the canvas operator, its data step's
optimality condition, and the noise-level estimate on real textures."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data

from diffpir_core.operators import Blur, NoSVDError, SuperResolution, add_noise, estimate_noise_sigma, gaussian_kernel
from diffpir_core.operators.boundary import CanvasConvolution

OPTIMALITY_TOLERANCE = 1e-9
"""‖(AᵀA + τ)x_p − (Aᵀy + τz)‖ / ‖Aᵀy + τz‖ of the canvas data step run to tolerance 1e-12 in float64."""


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _kernels(batch: int, kh: int, kw: int, seed: int) -> torch.Tensor:
    k = _rand(batch, kh, kw, seed=seed) + 0.1
    return k / k.sum(dim=(-2, -1), keepdim=True)


OPERATORS = {
    "blur_per_image": (Blur(_kernels(2, 5, 5, 0), boundary="reflect"), 1),
    "blur_even_kernel": (Blur(_kernels(1, 4, 6, 1)[0], boundary="reflect"), 1),
    "sr2_per_image": (SuperResolution(2, kernel=_kernels(2, 5, 5, 2), boundary="reflect"), 2),
    "sr3_even_kernel": (SuperResolution(3, kernel=_kernels(1, 4, 6, 3)[0], boundary="reflect"), 3),
}


def _frame(name: str, seed: int) -> torch.Tensor:
    sf = OPERATORS[name][1]
    return _rand(2, 3, 10 * sf, 14 * sf, seed=seed)


def test_reflect_blur_is_scipy_reflect_convolution():
    x = _rand(1, 3, 20, 26, seed=1)
    k = _kernels(1, 7, 5, 2)[0]
    expected = np.stack([ndimage.convolve(x[0, c].numpy(), k.numpy(), mode="reflect") for c in range(3)])
    assert np.abs(Blur(k, boundary="reflect").A(x)[0].numpy() - expected).max() <= 1e-12
    sr = SuperResolution(2, kernel=k, boundary="reflect").A(x)[0].numpy()
    assert np.abs(sr - expected[:, ::2, ::2]).max() <= 1e-12


@pytest.mark.parametrize("name", OPERATORS)
def test_frame_and_canvas_adjointness(name):
    op, _ = OPERATORS[name]
    x = _frame(name, 10)
    y = _rand(*op.A(x).shape, seed=11)
    assert abs((op.A(x) * y).sum() - (x * op.A_adjoint(y)).sum()) <= 1e-12 * (op.A(x) * y).sum()
    canvas = op.on_canvas(y, multiple=8)
    xc = _rand(2, 3, canvas.canvas.height, canvas.canvas.width, seed=12)
    lhs = (canvas.A(xc) * y).sum()
    assert abs(lhs - (xc * canvas.A_adjoint(y)).sum()) <= 1e-12 * lhs


@pytest.mark.parametrize("name", OPERATORS)
def test_canvas_is_the_valid_convolution_of_a_larger_scene(name):
    # The canvas holds every scene pixel the frame saw, its sides are multiples of lcm(8, sf), and its operator is
    # the frame's whenever the scene beyond the frame is the frame's mirror image.
    op, sf = OPERATORS[name]
    x = _frame(name, 20)
    y = op.A(x)
    canvas = op.on_canvas(y, multiple=8)
    assert isinstance(canvas, CanvasConvolution)
    c = canvas.canvas
    assert c.height % np.lcm(8, sf) == 0 and c.width % np.lcm(8, sf) == 0
    scene = c.extend(x)
    assert torch.equal(c.crop(scene), x)
    assert (canvas.A(scene) - y).abs().max() <= 1e-12
    changed = scene.clone()  # pixels the frame's measurement never saw: a corner far from the frame
    changed[..., -1, -1] += 1.0
    assert (canvas.A(changed) - y).abs().max() <= 1e-12


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("rho", [1e-3, 0.7, 30.0])
def test_canvas_data_step_meets_its_optimality_condition(name, rho):
    op, _ = OPERATORS[name]
    y = op.A(_frame(name, 30)) + 0.01 * _rand(2, 3, 10, 14, seed=31)
    canvas = op.on_canvas(y, multiple=8)
    term = canvas.prepare(y)
    term.tolerance, term.iterations = 1e-12, 2000
    z = _rand(2, 3, canvas.canvas.height, canvas.canvas.width, seed=32)
    taus = torch.tensor([rho, 2 * rho], dtype=torch.float64)
    x_p = (term.prox(z * 2 - 1, taus) + 1) / 2
    tau = taus.reshape(-1, 1, 1, 1)
    rhs = canvas.A_adjoint(y) + tau * z
    gap = canvas.A_adjoint(canvas.A(x_p)) + tau * x_p - rhs
    assert (gap.flatten(1).norm(dim=1) / rhs.flatten(1).norm(dim=1)).max() <= OPTIMALITY_TOLERANCE


def test_default_data_step_stops_by_its_stated_rule():
    # Default: 20 iterations, or the residual down to 1e-3 of the start's; the sampler's solves are this accurate.
    op, _ = OPERATORS["blur_per_image"]
    y = op.A(_frame("blur_per_image", 40))
    canvas = op.on_canvas(y, multiple=8)
    term = canvas.prepare(y)
    z = _rand(2, 3, canvas.canvas.height, canvas.canvas.width, seed=41)
    start = canvas.A_adjoint(y - canvas.A(z))
    x_p = (term.prox(z * 2 - 1, 0.7) + 1) / 2
    residual = canvas.A_adjoint(y - canvas.A(x_p)) - 0.7 * (x_p - z)
    ratio = residual.flatten(2).norm(dim=2) / start.flatten(2).norm(dim=2)
    assert term.last_iterations == 20 or ratio.max() <= 1e-3


def test_batched_canvas_prox_equals_single_images():
    op, _ = OPERATORS["blur_per_image"]
    y = op.A(_frame("blur_per_image", 50)).float()
    canvas = op.on_canvas(y, multiple=8)
    x0 = _rand(2, 3, canvas.canvas.height, canvas.canvas.width, seed=51).float() * 2 - 1
    rho = torch.tensor([1e-4, 0.5])
    batched = canvas.prepare(y).prox(x0, rho)
    for b in range(2):
        single = Blur(op.kernel[b], boundary="reflect").on_canvas(y[b : b + 1], multiple=8)
        alone = single.prepare(y[b : b + 1]).prox(x0[b : b + 1], rho[b])
        assert (alone - batched[b : b + 1]).abs().max() <= 1e-5


def test_circular_boundary_is_the_operator_itself():
    op = Blur(_kernels(1, 5, 5, 0)[0])
    y = _rand(1, 3, 12, 12, seed=60)
    assert op.on_canvas(y, multiple=8) is op and op.crop(y) is y


def test_non_circular_boundary_has_no_svd_and_no_frame_data_step():
    op, _ = OPERATORS["blur_per_image"]
    y = op.A(_frame("blur_per_image", 70))
    assert not op.has_svd and not SuperResolution(2, boundary="reflect").has_svd
    with pytest.raises(NoSVDError, match="only boundary 'circular'"):
        op.svd(y)
    with pytest.raises(ValueError, match="on_canvas"):
        op.prepare(y)
    with pytest.raises(ValueError, match="boundary must be one of circular, reflect"):
        Blur(_kernels(1, 3, 3, 0)[0], boundary="wrap")


# --- noise level estimation ---------------------------------------------------------------------------------

BLURRED_RELATIVE_ERROR = 0.03
"""|σ̂/σ − 1| on blurred photos (the measured worst case is 0.4 % at σ = 0.005: blur leaves no fine texture)."""
SHARP_RELATIVE_ERROR = 0.15
"""|σ̂/σ − 1| on sharp photos at σ = 0.05 (measured worst 10 %: fine texture reads as noise, more at low σ)."""


def _photos() -> torch.Tensor:
    crops = [data.astronaut()[:192, 160:352], data.coffee()[100:292, 200:392], data.chelsea()[50:242, 100:292]]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).double() / 255


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.02, 0.05])
def test_noise_estimate_on_blurred_photos(sigma):
    blurred = Blur(gaussian_kernel(21, 2.5), boundary="reflect").A(_photos())
    estimates = np.array(estimate_noise_sigma(add_noise(blurred.float(), sigma, seed=[1, 2, 3])))
    assert np.abs(estimates / sigma - 1).max() <= BLURRED_RELATIVE_ERROR


def test_noise_estimate_on_sharp_photos():
    estimates = np.array(estimate_noise_sigma(add_noise(_photos().float(), 0.05, seed=[1, 2, 3])))
    assert np.abs(estimates / 0.05 - 1).max() <= SHARP_RELATIVE_ERROR
