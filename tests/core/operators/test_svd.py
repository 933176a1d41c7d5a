"""The operators' SVDs (operators/svd.py): U and V orthonormal, A = U·diag(s)·Vᴴ, the null-space split,
per-image parameters, the singular values of the explicit matrix, and operators without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffpir_core.operators import (
    Blur,
    Inpainting,
    NoSVDError,
    SuperResolution,
    bicubic_kernel,
    gaussian_kernel,
    random_mask,
)


def _kernels(size: int, count: int, seed: int) -> torch.Tensor:
    k = torch.rand(count, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return k / k.sum(dim=(-2, -1), keepdim=True)


OPERATORS = {
    "inpaint_per_image_1ch": (
        lambda: Inpainting(torch.stack([random_mask(16, seed=1), random_mask(16, seed=2)])[:, None]),
        16,
    ),
    "inpaint_per_image_3ch": (
        lambda: Inpainting(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5),
        16,
    ),
    "blur_per_image": (lambda: Blur(_kernels(5, 2, 4)), 16),
    "blur_with_spectral_zeros": (lambda: Blur(torch.full((2, 2), 0.25, dtype=torch.float64)), 16),
    "sr2_bicubic": (lambda: SuperResolution(2), 32),
    "sr3_per_image": (lambda: SuperResolution(3, kernel=_kernels(7, 2, 5)), 18),
    "sr4_bicubic": (lambda: SuperResolution(4), 32),
}


def _setup(name: str) -> tuple:
    """(operator, x, y, svd) in float64, batch of 2 with per-image parameters where the operator has them."""
    build, size = OPERATORS[name]
    op = build()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    y = op.A(x)
    return op, x, y, op.svd(y)


@pytest.fixture(params=list(OPERATORS))
def setup(request):
    """:func:`_setup` for every operator of ``OPERATORS``."""
    return _setup(request.param)


def _norm2(t: torch.Tensor) -> torch.Tensor:
    return (t.abs() ** 2).flatten(1).sum(dim=1)


def test_A_is_U_S_Vh(setup):
    op, x, y, svd = setup
    assert torch.allclose(svd.A(x), y, atol=1e-12)
    assert svd.singulars.min() >= 0 and not svd.singulars.is_complex()


def test_V_has_orthonormal_columns(setup):
    """Vᴴ(V z) = z and ‖V z‖ = ‖z‖ for random (complex, for a complex SVD) coordinates z."""
    op, x, y, svd = setup
    coords = svd.Vt(x)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(coords.shape, dtype=torch.float64, generator=gen)
    if coords.is_complex():
        z = torch.complex(z, torch.randn(coords.shape, dtype=torch.float64, generator=gen))
    assert torch.allclose(svd.Vt(svd.V(z)), z, atol=1e-12)
    assert torch.allclose(_norm2(svd.V(z)), _norm2(z), rtol=1e-12)


def test_U_is_unitary(setup):
    op, x, y, svd = setup
    coords = svd.Ut(y)
    assert torch.allclose(_norm2(coords), _norm2(y), rtol=1e-12)
    back = svd.U(coords)
    assert torch.allclose(back.real if back.is_complex() else back, y, atol=1e-12)
    z = torch.randn(coords.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(coords.dtype)
    assert torch.allclose(svd.Ut(svd.U(z)), z, atol=1e-12)


def test_null_space_split_is_orthogonal(setup):
    """x = V·Vᴴx + null(x), ‖x‖² = ‖Vᴴx‖² + ‖null(x)‖², A(null(x)) = 0, null is a projection, and the
    measured part of a real image is real (V·Vᴴ is a real projection)."""
    op, x, y, svd = setup
    seen, rest = svd.V(svd.Vt(x)), svd.null(x)
    assert torch.allclose(seen + rest, x.to(seen.dtype), atol=1e-12)
    assert torch.allclose(_norm2(svd.Vt(x)) + _norm2(rest), _norm2(x), rtol=1e-12)
    assert float(seen.imag.abs().max() if seen.is_complex() else 0.0) < 1e-12
    assert float(op.A(rest.real if rest.is_complex() else rest).abs().max()) < 1e-12
    assert torch.allclose(svd.null(rest), rest, atol=1e-12)


@pytest.mark.parametrize("name", [name for name in OPERATORS if "per_image" in name])
def test_per_image_parameters_give_each_image_its_own_svd(name: str):
    op, x, y, svd = _setup(name)
    assert op.batch_size == 2
    for b in range(2):
        single = type(op)(op.mask[b : b + 1]) if isinstance(op, Inpainting) else _single(op, b)
        one = single.svd(y[b : b + 1])
        assert torch.allclose(one.singulars, svd.singulars[b : b + 1], atol=1e-14)
        assert torch.allclose(one.Vt(x[b : b + 1]), svd.Vt(x)[b : b + 1], atol=1e-12)


def _single(op, b: int):
    if isinstance(op, Blur):
        return Blur(op.kernel[b])
    return SuperResolution(op.sf, kernel=op.kernel[b])


@pytest.mark.parametrize(
    "op, size",
    [
        (SuperResolution(2, kernel=bicubic_kernel(2)), 32),
        (Blur(gaussian_kernel(5, 1.2)), 10),
        (SuperResolution(3, kernel=_kernels(5, 1, 6)[0]), 12),
    ],
)
def test_singular_values_are_those_of_the_matrix(op, size):
    """The FFT/polyphase singular values equal NumPy's SVD of the operator's explicit matrix (one channel)."""
    eye = torch.eye(size * size, dtype=torch.float64).reshape(-1, 1, size, size).expand(-1, 3, -1, -1).contiguous()
    matrix = op.A(eye)[:, 0].reshape(size * size, -1).T.numpy()
    expected = np.linalg.svd(matrix, compute_uv=False)
    ours = op.svd(op.A(eye[:1])).singulars.flatten().numpy()
    assert np.allclose(np.sort(ours)[::-1], expected, atol=1e-12)


def test_operators_without_svd_say_so():
    op = SuperResolution(2, mode="cubic")
    assert not op.has_svd
    with pytest.raises(NoSVDError, match="SuperResolution has no singular value decomposition"):
        op.svd(torch.rand(1, 3, 8, 8))
    assert Blur(gaussian_kernel(5, 1.0)).has_svd and SuperResolution(2).has_svd
    assert Inpainting(random_mask(8, seed=0)).has_svd
