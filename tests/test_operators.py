"""Dot tests and closed forms for the generic operators."""

import pytest
import torch

from galdeblend.errors import InputError
from galdeblend.operators import Downsample, Identity, Mask, Matrix, Scale


def assert_adjoint(A, in_shape, out_shape, B=3, seed=0):
    """<A x, y> = <x, A^T y> to 1e-5 relative in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, *in_shape, generator=g, dtype=torch.float64)
    y = torch.randn(B, *out_shape, generator=g, dtype=torch.float64)
    Ax = A.forward(x)
    assert Ax.shape == y.shape
    lhs = (Ax * y).sum()
    rhs = (x * A.adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs).clamp_min(1e-12)


def test_identity():
    assert_adjoint(Identity(), (4, 5), (4, 5))


def test_matrix_shared_and_per_item():
    g = torch.Generator().manual_seed(1)
    M = torch.randn(3, 6, generator=g, dtype=torch.float64)
    assert_adjoint(Matrix(M), (6,), (3,))
    Ms = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    A = Matrix(Ms)
    assert_adjoint(A, (6,), (4,))
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(A.forward(x)[1], Ms[1] @ x[1])
    torch.testing.assert_close(A[1:2].forward(x[1:2])[0], Ms[1] @ x[1])
    with pytest.raises(InputError, match="Matrix: M must have shape"):
        Matrix(torch.zeros(2))


def test_mask_scale_downsample():
    m = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.3).double()
    assert_adjoint(Mask(m, per_item=True)[0 : 3 - 1], (3, 8, 8), (3, 8, 8), B=2)
    assert_adjoint(Scale(torch.tensor([1.0, 2.0, 3.0])), (5,), (5,))
    assert_adjoint(Downsample(2), (2, 8, 6), (2, 4, 3))
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 4, 4)
    torch.testing.assert_close(
        Downsample(2).forward(x)[0], torch.tensor([[2.5, 4.5], [10.5, 12.5]], dtype=torch.float64)
    )
    with pytest.raises(InputError, match="not a multiple of factor 3"):
        Downsample(3).forward(torch.zeros(1, 4, 4))
    with pytest.raises(InputError, match="positive integer"):
        Downsample(0)


def test_compose_and_sum():
    g = torch.Generator().manual_seed(3)
    M1 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    M2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    M3 = torch.randn(2, 6, generator=g, dtype=torch.float64)
    A = Matrix(M2) @ Matrix(M1) + Matrix(M3) * 2.0
    assert_adjoint(A, (6,), (2,))
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(A.forward(x), x @ (M2 @ M1 + 2 * M3).T)


def test_adjoint_stack_interpolate():
    from galdeblend.operators import Interpolate, Stack

    g = torch.Generator().manual_seed(4)
    M1 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    M2 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    assert_adjoint(Matrix(M1).T, (5,), (6,))
    S = Stack([Matrix(M1), None, Matrix(M2)], [(5,), (2,), (3,)], (6,))
    assert_adjoint(S, (6,), (10,))
    x = torch.randn(2, 6, generator=g, dtype=torch.float64)
    blocks = S.blocks(S.forward(x))
    torch.testing.assert_close(blocks[0], x @ M1.T)
    assert torch.all(blocks[1] == 0)
    interp = Interpolate((4, 3), (16, 12))
    assert_adjoint(interp, (2, 4, 3), (2, 16, 12))
    # A linear ramp is reproduced exactly, up to the edges.
    ramp = torch.arange(4, dtype=torch.float64)[:, None].expand(4, 3)[None]
    out = interp.forward(ramp)[0]
    centres = (torch.arange(16, dtype=torch.float64) + 0.5) * 4 / 16 - 0.5
    torch.testing.assert_close(out[:, 5], centres)
    # 2 x 2 nodes: any plane a + b x + c y + d x y over the whole output; 1 node: a constant.
    yy, xx = torch.meshgrid(
        torch.arange(10, dtype=torch.float64), torch.arange(14, dtype=torch.float64), indexing="ij"
    )
    surface = 1.0 + 0.3 * xx - 0.7 * yy + 0.05 * xx * yy
    node_y, node_x = (torch.tensor([0.25, 0.75], dtype=torch.float64) * n - 0.5 for n in (10, 14))
    nodes = 1.0 + 0.3 * node_x[None] - 0.7 * node_y[:, None] + 0.05 * node_x[None] * node_y[:, None]
    torch.testing.assert_close(Interpolate((2, 2), (10, 14)).forward(nodes[None])[0], surface)
    one = Interpolate((1, 1), (5, 7)).forward(torch.full((1, 1, 1), 2.5, dtype=torch.float64))
    torch.testing.assert_close(one, torch.full((1, 5, 7), 2.5, dtype=torch.float64))
