"""Operator properties on random data in float64: adjointness, prox = dense least squares, batching."""

import functools

import pytest
import torch

from diffpir_core.operators import Blur, Inpainting, Operator, SuperResolution, random_mask

H = W = 12


def _kernels(batch: int, size: int, seed: int) -> torch.Tensor:
    k = torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _operators() -> dict[str, Operator]:
    masks = torch.stack([random_mask(H, W, seed=s, known_fraction=f) for s, f in ((0, 0.3), (1, 0.7))])[:, None]
    return {
        "blur_shared": Blur(_kernels(1, 5, 0)[0]),
        "blur_per_image": Blur(_kernels(2, 3, 1)),
        "sr2_per_image": SuperResolution(2, kernel=_kernels(2, 5, 2)),
        "sr3_even_kernel": SuperResolution(3, kernel=_kernels(1, 4, 3)[0]),
        "sr4_ours": SuperResolution(4),
        "sr3_cubic": SuperResolution(3, mode="cubic"),
        "inpaint_per_image": Inpainting(masks),
        "inpaint_shared": Inpainting(masks[0, 0]),
    }


OPERATORS = _operators()


def _size(name: str) -> int:
    """Image side for an operator: H, or 32 for our ×4 kernel (25×25 must fit)."""
    return 32 if name == "sr4_ours" else H


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", OPERATORS)
def test_adjointness(name):
    op = OPERATORS[name]
    x = _rand(2, 3, _size(name), _size(name), seed=10)
    ax = op.A(x)
    y = _rand(*ax.shape, seed=11)
    lhs = (ax * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def _single_image_operator(op: Operator, index: int) -> Operator:
    """The operator of image ``index`` alone (itself when its parameters are shared)."""
    if op.batch_size is None:
        return op
    if isinstance(op, Inpainting):
        return Inpainting(op.mask[index : index + 1])
    if isinstance(op, SuperResolution):
        return SuperResolution(op.sf, kernel=op.kernel[index])
    return Blur(op.kernel[index])


@functools.cache
def _dense_matrix(name: str, index: int) -> torch.Tensor:
    """Matrix of A for image ``index``, one channel (A acts on channels alike), from one batched call."""
    op = _single_image_operator(OPERATORS[name], index)
    basis = torch.eye(H * W, dtype=torch.float64).reshape(-1, 1, H, W).expand(-1, 3, -1, -1)
    return op.A(basis)[:, 0].reshape(H * W, -1).T


@pytest.mark.parametrize(
    "name", ["blur_shared", "blur_per_image", "sr2_per_image", "sr3_even_kernel", "inpaint_per_image"]
)
@pytest.mark.parametrize("rho", [1e-3, 0.7, 30.0])
def test_prox_equals_dense_least_squares(name, rho):
    # prox(P(z), rho) = P(argmin_x ||y - A x||² + rho ||x - z||²), solved densely per image.
    op = OPERATORS[name]
    clean = op.A(_rand(2, 3, H, W, seed=20))
    y = clean + 0.01 * _rand(*clean.shape, seed=21)
    z = _rand(2, 3, H, W, seed=22)
    x_p = (op.prepare(y).prox(z * 2 - 1, torch.tensor([rho, 2 * rho], dtype=torch.float64)) + 1) / 2
    for b, tau in enumerate((rho, 2 * rho)):
        a = _dense_matrix(name, b)
        lhs = a.T @ a + tau * torch.eye(H * W, dtype=torch.float64)
        rhs = a.T @ y[b].reshape(3, -1).T + tau * z[b].reshape(3, -1).T
        expected = torch.linalg.solve(lhs, rhs).T.reshape(3, H, W)
        assert (x_p[b] - expected).abs().max() <= 1e-9


@pytest.mark.parametrize("name", ["blur_per_image", "sr2_per_image", "inpaint_per_image"])
def test_batched_prox_equals_single_image_bitwise(name):
    # float32, as in sampling: each image's result must not depend on its batch mates.
    op = OPERATORS[name]
    x = _rand(2, 3, H, W, seed=30).float()
    y = op.A(x)
    x0 = _rand(2, 3, H, W, seed=31).float() * 2 - 1
    rho = torch.tensor([1e-7, 0.5])
    batched = op.prepare(y).prox(x0, rho)
    for b in range(2):
        alone = _single_image_operator(op, b).prepare(y[b : b + 1]).prox(x0[b : b + 1], rho[b])
        assert torch.equal(alone, batched[b : b + 1])


def test_cubic_mode_back_projection_reduces_the_residual():
    # The reference's IBP step: a fixed point at consistent estimates, a smaller residual otherwise.
    op = OPERATORS["sr3_cubic"]
    x = _rand(2, 3, H, W, seed=40)
    y = op.A(x)
    term = op.prepare(y)
    assert (term.prox(x * 2 - 1, 0.5) - (x * 2 - 1)).abs().max() <= 1e-14
    z = _rand(2, 3, H, W, seed=41)
    stepped = (term.prox(z * 2 - 1, 0.0) + 1) / 2
    assert (y - op.A(stepped)).norm() < (y - op.A(z)).norm()


@pytest.mark.parametrize("name", OPERATORS)
def test_init_image_shape(name):
    op = OPERATORS[name]
    size = _size(name)
    init = op.init_image(op.A(_rand(2, 3, size, size, seed=50)))
    assert init.shape == (2, 3, size, size)
    assert op.init_is_noisy_measurement == (not isinstance(op, SuperResolution))
