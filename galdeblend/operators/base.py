"""Batched linear operators with forward and adjoint.

An operator maps a batch of sources ``x`` of shape ``(B, *in_shape)`` to a batch of
observations of shape ``(B, *out_shape)``; ``adjoint`` maps back. Operators whose
parameters differ per batch item (a matrix per observation, a mask per cutout) hold
them with a leading batch axis and can be sliced with ``op[index]`` so that the
E-step can work on chunks of a large set of observations.

Composition is written ``A @ B`` (apply ``B`` first) and sums ``A + B``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from galdeblend.errors import InputError

__all__ = [
    "LinearOperator",
    "Identity",
    "Matrix",
    "Mask",
    "Downsample",
    "Scale",
    "Compose",
    "Sum",
    "Adjoint",
    "Stack",
    "Interpolate",
]


class LinearOperator:
    """A linear map, batched over a leading axis.

    Subclasses implement :meth:`forward` and :meth:`adjoint`, and override
    :meth:`__getitem__` and :meth:`to` when they hold per-item tensors.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Apply the operator: ``(B, *in_shape) -> (B, *out_shape)``."""
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        """Apply the adjoint: ``(B, *out_shape) -> (B, *in_shape)``."""
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def __getitem__(self, index: Tensor | slice) -> LinearOperator:
        """The operator restricted to the batch items ``index`` (itself if shared)."""
        return self

    def to(self, *args, **kwargs) -> LinearOperator:
        """The operator with its tensors moved (``Tensor.to`` arguments)."""
        return self

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Compose([self, other])

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum([self, other])

    def __mul__(self, factor: float | Tensor) -> LinearOperator:
        return Compose([Scale(factor), self])

    __rmul__ = __mul__

    @property
    def T(self) -> LinearOperator:
        """The adjoint as an operator."""
        return Adjoint(self)


class Identity(LinearOperator):
    """The identity map on any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y


class Matrix(LinearOperator):
    """A dense matrix acting on flat vectors.

    Parameters
    ----------
    M : Tensor
        ``(m, n)`` for one matrix shared by the batch, or ``(B, m, n)`` for one
        matrix per batch item. Inputs are ``(B, n)``, outputs ``(B, m)``.
    """

    def __init__(self, M: Tensor):
        if M.ndim not in (2, 3):
            raise InputError(f"Matrix: M must have shape (m, n) or (B, m, n), got {tuple(M.shape)}")
        self.M = M
        self.in_shape = (M.shape[-1],)
        self.out_shape = (M.shape[-2],)

    def forward(self, x: Tensor) -> Tensor:
        M = self.M.to(x.dtype)
        if M.ndim == 2:
            return x @ M.T
        return torch.einsum("bmn,bn->bm", M, x)

    def adjoint(self, y: Tensor) -> Tensor:
        M = self.M.to(y.dtype)
        if M.ndim == 2:
            return y @ M
        return torch.einsum("bmn,bm->bn", M, y)

    def __getitem__(self, index):
        return self if self.M.ndim == 2 else Matrix(self.M[index])

    def to(self, *args, **kwargs):
        return Matrix(self.M.to(*args, **kwargs))


class Mask(LinearOperator):
    """Multiply by a 0/1 (or any real) mask; self-adjoint.

    Parameters
    ----------
    m : Tensor
        Broadcastable against ``(B, *shape)``. If ``per_item`` the first axis of
        ``m`` is the batch axis (``(B, *shape)``), otherwise ``m`` (``shape``) is shared.
    """

    def __init__(self, m: Tensor, *, per_item: bool = False):
        self.m = m
        self.per_item = per_item

    def forward(self, x: Tensor) -> Tensor:
        return x * self.m.to(x.dtype)

    adjoint = forward

    def __getitem__(self, index):
        return Mask(self.m[index], per_item=True) if self.per_item else self

    def to(self, *args, **kwargs):
        return Mask(self.m.to(*args, **kwargs), per_item=self.per_item)


class Scale(LinearOperator):
    """Multiply by a scalar, or by one factor per batch item (``(B,)``)."""

    def __init__(self, factor: float | Tensor):
        self.factor = torch.as_tensor(factor)

    def _broadcast(self, x: Tensor) -> Tensor:
        f = self.factor.to(dtype=x.dtype, device=x.device)
        return f.reshape(f.shape + (1,) * (x.ndim - f.ndim)) if f.ndim else f

    def forward(self, x: Tensor) -> Tensor:
        return x * self._broadcast(x)

    adjoint = forward

    def __getitem__(self, index):
        return Scale(self.factor[index]) if self.factor.ndim else self

    def to(self, *args, **kwargs):
        return Scale(self.factor.to(*args, **kwargs))


class Downsample(LinearOperator):
    """Average ``factor x factor`` pixel blocks of the last two axes.

    ``(B, ..., H, W) -> (B, ..., H // factor, W // factor)``; ``H`` and ``W`` must be
    multiples of ``factor``. The adjoint spreads each value evenly over its block.
    """

    def __init__(self, factor: int):
        if int(factor) != factor or factor < 1:
            raise InputError(f"Downsample: factor must be a positive integer, got {factor!r}")
        self.factor = int(factor)

    def forward(self, x: Tensor) -> Tensor:
        p = self.factor
        *lead, H, W = x.shape
        if H % p or W % p:
            raise InputError(f"Downsample: image shape {(H, W)} is not a multiple of factor {p}")
        return x.reshape(*lead, H // p, p, W // p, p).mean(dim=(-3, -1))

    def adjoint(self, y: Tensor) -> Tensor:
        p = self.factor
        up = y.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1)
        return up / (p * p)


class Compose(LinearOperator):
    """``ops[0] @ ops[1] @ ...``: the last operator is applied first."""

    def __init__(self, ops: Sequence[LinearOperator]):
        flat: list[LinearOperator] = []
        for op in ops:
            flat.extend(op.ops if isinstance(op, Compose) else [op])
        self.ops = flat

    def forward(self, x: Tensor) -> Tensor:
        for op in reversed(self.ops):
            x = op.forward(x)
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        for op in self.ops:
            y = op.adjoint(y)
        return y

    def __getitem__(self, index):
        return Compose([op[index] for op in self.ops])

    def to(self, *args, **kwargs):
        return Compose([op.to(*args, **kwargs) for op in self.ops])


class Sum(LinearOperator):
    """``ops[0] + ops[1] + ...``, all with the same input and output shapes."""

    def __init__(self, ops: Sequence[LinearOperator]):
        flat: list[LinearOperator] = []
        for op in ops:
            flat.extend(op.ops if isinstance(op, Sum) else [op])
        self.ops = flat

    def forward(self, x: Tensor) -> Tensor:
        return sum(op.forward(x) for op in self.ops)

    def adjoint(self, y: Tensor) -> Tensor:
        return sum(op.adjoint(y) for op in self.ops)

    def __getitem__(self, index):
        return Sum([op[index] for op in self.ops])

    def to(self, *args, **kwargs):
        return Sum([op.to(*args, **kwargs) for op in self.ops])


class Adjoint(LinearOperator):
    """The adjoint ``A^T`` of an operator ``A`` (write ``A.T``)."""

    def __init__(self, op: LinearOperator):
        self.op = op

    def forward(self, x: Tensor) -> Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.op.forward(y)

    @property
    def T(self) -> LinearOperator:
        return self.op

    def __getitem__(self, index):
        return Adjoint(self.op[index])

    def to(self, *args, **kwargs):
        return Adjoint(self.op.to(*args, **kwargs))


class Stack(LinearOperator):
    """Several observations of one source, flattened and concatenated.

    ``x -> [A_1 x, ..., A_n x]``, each ``A_i x`` of shape ``(B, *out_shapes[i])``
    flattened, giving ``(B, sum_i prod(out_shapes[i]))``. An entry ``None`` in
    ``ops`` is a block of zeros (the source is not seen in that observation).

    Parameters
    ----------
    ops : sequence of LinearOperator or None
    out_shapes : sequence of tuple of int
        Output shape (without batch axis) of each block.
    in_shape : tuple of int
        Shape of one source (needed for the adjoint of an all-``None`` stack).
    """

    def __init__(
        self,
        ops: Sequence[LinearOperator | None],
        out_shapes: Sequence[tuple[int, ...]],
        in_shape: tuple[int, ...],
    ):
        if len(ops) != len(out_shapes):
            raise InputError(f"Stack: {len(ops)} operators for {len(out_shapes)} output shapes")
        self.ops = list(ops)
        self.out_shapes = [tuple(s) for s in out_shapes]
        self.in_shape = tuple(in_shape)
        self.sizes = [int(torch.Size(s).numel()) for s in self.out_shapes]

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        blocks = [
            op.forward(x).reshape(B, -1) if op is not None else x.new_zeros(B, size)
            for op, size in zip(self.ops, self.sizes)
        ]
        return torch.cat(blocks, dim=1)

    def adjoint(self, y: Tensor) -> Tensor:
        B = y.shape[0]
        x = y.new_zeros(B, *self.in_shape)
        for op, block, shape in zip(self.ops, y.split(self.sizes, dim=1), self.out_shapes):
            if op is not None:
                x = x + op.adjoint(block.reshape(B, *shape))
        return x

    def blocks(self, y: Tensor) -> list[Tensor]:
        """Split a stacked ``(B, N)`` tensor into ``(B, *out_shapes[i])`` blocks."""
        return [
            b.reshape(y.shape[0], *s) for b, s in zip(y.split(self.sizes, dim=1), self.out_shapes)
        ]

    def __getitem__(self, index):
        return Stack(
            [op[index] if op is not None else None for op in self.ops],
            self.out_shapes,
            self.in_shape,
        )

    def to(self, *args, **kwargs):
        ops = [op.to(*args, **kwargs) if op is not None else None for op in self.ops]
        return Stack(ops, self.out_shapes, self.in_shape)


def _linear_weights(n_out: int, n_in: int) -> Tensor:
    """``(n_out, n_in)`` linear interpolation from ``n_in`` nodes at the centres of ``n_in``
    equal cells spanning the output's extent, extended linearly beyond the outer nodes
    (one node: a constant)."""
    R = torch.zeros(n_out, n_in, dtype=torch.float64)
    if n_in == 1:
        return R + 1.0
    pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5
    lo = pos.floor().long().clamp(0, n_in - 2)
    frac = pos - lo
    R[torch.arange(n_out), lo] += 1 - frac
    R[torch.arange(n_out), lo + 1] += frac
    return R


class Interpolate(LinearOperator):
    """Bilinear interpolation of a coarse grid onto a finer one covering the same extent.

    ``(B, ..., h, w) -> (B, ..., H, W)`` as ``R_y X R_x^T`` with linear-interpolation
    matrices ``R_y`` ``(H, h)`` and ``R_x`` ``(W, w)``; the coarse nodes sit at the centres
    of ``h x w`` equal cells and the surface is extended linearly to the edges, so that a
    ``2 x 2`` grid is a plane plus a twist (``xy``) term over the whole output. Used for
    smooth fields such as the sky background.
    """

    def __init__(self, in_shape: tuple[int, int], out_shape: tuple[int, int]):
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.R_y = _linear_weights(out_shape[0], in_shape[0])
        self.R_x = _linear_weights(out_shape[1], in_shape[1])

    def forward(self, x: Tensor) -> Tensor:
        R_y, R_x = self.R_y.to(x), self.R_x.to(x)
        return R_y @ x @ R_x.T

    def adjoint(self, y: Tensor) -> Tensor:
        R_y, R_x = self.R_y.to(y), self.R_x.to(y)
        return R_y.T @ y @ R_x
