"""Joint posterior denoiser over several sources (MMPS) and posterior sampling.

For an observation ``y = sum_b A_b x_b + n`` with ``n ~ N(0, diag(Sigma_y))`` and
independent priors ``p_b(x_b)``, the stacked state ``u_t = [x_1; ...; x_S]`` is
denoised by moment matching (Rozet et al. 2024, Eq. 10; Wagner-Carena et al. 2025,
Eq. 17)::

    x_hat_b = d_b(x_b, sigma_t),          J_b = d x_hat_b / d x_b
    r       = y - sum_b A_b x_hat_b
    C v     = Sigma_y v + sigma_t^2 sum_b A_b J_b^T A_b^T v
    E[x_b | u_t, y] = x_hat_b + sigma_t^2 J_b^T A_b^T C^-1 r

``C v = r`` is solved by batched conjugate gradient with float64 inner products,
preconditioned by the diagonal ``C`` would have under a standard normal prior (the
observations of a field mix bands and surveys whose noise variances differ by orders of
magnitude).
The cost is linear in the number of sources.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from galdeblend.diffusion.samplers import SAMPLERS, sample
from galdeblend.diffusion.schedule import VESchedule
from galdeblend.errors import InputError
from galdeblend.operators.base import LinearOperator

__all__ = [
    "JointPosteriorDenoiser",
    "conjugate_gradient",
    "operator_diagonal",
    "sample_posterior",
    "validate_problem",
    "select_items",
    "chunk_generator",
]

BATCH_SIZE = 64  # default number of (observation, sample) pairs denoised at once


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-item inner product ``(B,)`` accumulated in float64."""
    return (a.to(torch.float64) * b.to(torch.float64)).flatten(1).sum(1)


def _per_item(c: Tensor, like: Tensor) -> Tensor:
    return c.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def conjugate_gradient(
    matvec, b: Tensor, *, iterations: int, inverse_diagonal: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Batched, optionally Jacobi-preconditioned CG for ``C x = b`` with ``x_0 = 0``.

    Each batch item is its own system.

    Parameters
    ----------
    matvec : callable
        ``v -> C v`` on ``(B, *shape)``; ``C`` symmetric positive definite per item.
    b : Tensor, shape ``(B, *shape)``
    iterations : int
    inverse_diagonal : Tensor, broadcastable to ``b``, optional
        ``M^-1`` of a diagonal preconditioner ``M`` (positive). One iteration is exact
        wherever ``C`` is close to ``M``, whatever the spread of its diagonal across
        bands and surveys; unpreconditioned CG weights every pixel's residual by one
        common scalar.

    Returns
    -------
    x : Tensor, shape ``(B, *shape)``, in float64
    r : Tensor, shape ``(B, *shape)``, in float64
        The recurrence residual ``b - C x`` (exact in exact arithmetic), which
        costs no extra product with ``C``.
    """
    b = b.to(torch.float64)
    m_inv = 1.0 if inverse_diagonal is None else inverse_diagonal.to(torch.float64)
    x = torch.zeros_like(b)
    r = b.clone()
    z = m_inv * r
    p = z.clone()
    rz = _dot(r, z)
    for _ in range(iterations):
        Cp = matvec(p).to(torch.float64)
        pCp = _dot(p, Cp)
        alpha = torch.where(pCp > 0, rz / pCp.clamp_min(1e-300), torch.zeros_like(rz))
        x = x + _per_item(alpha, x) * p
        r = r - _per_item(alpha, r) * Cp
        z = m_inv * r
        rz_new = _dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))
        p = z + _per_item(beta, p) * p
        rz = rz_new
    return x, r


class JointPosteriorDenoiser:
    """MMPS denoiser of the stacked sources given one observation per batch item.

    Parameters
    ----------
    priors : sequence of priors
        One per source; each ``prior(x_t, sigma_t)`` denoises ``(B, *shape_b)``.
    operators : sequence of LinearOperator
        ``A_b`` mapping ``(B, *shape_b)`` to ``(B, *obs_shape)``.
    y : Tensor, shape ``(B, *obs_shape)``
    noise_variance : Tensor, broadcastable to ``y``
    cg_iterations : int
        Conjugate-gradient iterations (1 in the paper).
    diag_AAt : Tensor, shape ``(B, *obs_shape)``, optional
        ``diag(sum_b A_b A_b^T)`` for the preconditioner (default: estimated by
        :func:`operator_diagonal`).
    resolve_threshold : float
        Items whose relative CG residual ``|C v - r| / |r|`` exceeds this (or is not
        finite) are solved again with ``C + lambda I``, ``lambda = regularization *
        (mean(Sigma_y) + sigma_t^2)``, which keeps them stable when a learned
        Jacobian is far from symmetric positive.

    Calling it on ``u_t`` ``(B, D_total)`` (sources flattened and concatenated in
    order) and ``sigma_t`` ``(B,)`` returns ``E[u | u_t, y]`` ``(B, D_total)``.
    """

    def __init__(
        self,
        priors: Sequence,
        operators: Sequence[LinearOperator],
        y: Tensor,
        noise_variance: Tensor,
        *,
        cg_iterations: int = 1,
        diag_AAt: Tensor | None = None,
        resolve_threshold: float = 1.0,
        regularization: float = 1.0,
    ):
        self.priors = list(priors)
        self.operators = list(operators)
        self.y = y
        self.noise_variance = noise_variance
        self.cg_iterations = cg_iterations
        self.resolve_threshold = resolve_threshold
        self.regularization = regularization
        self.shapes = [tuple(p.shape) for p in self.priors]
        self.sizes = [math.prod(s) for s in self.shapes]
        if diag_AAt is None:
            diag_AAt = operator_diagonal(self.operators, self.shapes, y)
        self.diag_AAt = diag_AAt
        self.groups: list[tuple[object, list[int]]] = []
        for i, prior in enumerate(self.priors):
            group = next((g for g in self.groups if g[0] is prior), None)
            if group is None:
                self.groups.append((prior, [i]))
            else:
                group[1].append(i)

    def split(self, u: Tensor) -> list[Tensor]:
        """``(B, D_total)`` -> list of ``(B, *shape_b)``."""
        return [x.reshape(-1, *s) for x, s in zip(u.split(self.sizes, dim=1), self.shapes)]

    @staticmethod
    def join(xs: Sequence[Tensor]) -> Tensor:
        """List of ``(B, *shape_b)`` -> ``(B, D_total)``."""
        return torch.cat([x.flatten(1) for x in xs], dim=1)

    def __call__(self, u_t: Tensor, sigma_t: Tensor) -> Tensor:
        B = u_t.shape[0]
        xs_t = self.split(u_t)
        with torch.enable_grad():
            # Sources that share a prior are denoised in one batch.
            leaves, outs = [], []
            for prior, members in self.groups:
                leaf = torch.cat([xs_t[i] for i in members]).detach().requires_grad_(True)
                leaves.append(leaf)
                outs.append(prior(leaf, sigma_t.repeat(len(members))))
            xs_hat = self._ungroup([out.detach() for out in outs], B)

            def vjp(ws: Sequence[Tensor]) -> list[Tensor]:
                grads_out = [torch.cat([ws[i] for i in members]) for _, members in self.groups]
                return self._ungroup(
                    torch.autograd.grad(outs, leaves, grads_out, retain_graph=True), B
                )

            sigma2 = _per_item(sigma_t**2, self.y)
            var = self.noise_variance.to(self.y.dtype)

            def cov_y(v: Tensor) -> Tensor:
                v = v.to(self.y.dtype)
                Jt = vjp([A.adjoint(v) for A in self.operators])
                return var * v + sigma2 * sum(A.forward(g) for A, g in zip(self.operators, Jt))

            r = self.y - sum(A.forward(x) for A, x in zip(self.operators, xs_hat))
            v = self._solve(cov_y, r, sigma_t, var)
            grads = vjp([A.adjoint(v.to(self.y.dtype)) for A in self.operators])
        return self.join([x + _per_item(sigma_t**2, x) * g for x, g in zip(xs_hat, grads)])

    def _ungroup(self, tensors: Sequence[Tensor], B: int) -> list[Tensor]:
        """Per-group batches back to one tensor per source."""
        out: list[Tensor] = [None] * len(self.priors)  # type: ignore[list-item]
        for t, (_, members) in zip(tensors, self.groups):
            for i, part in zip(members, t.split(B)):
                out[i] = part
        return out

    def _solve(self, cov_y, r: Tensor, sigma_t: Tensor, var: Tensor) -> Tensor:
        """CG, then a regularized re-solve of the items whose residual stayed large.

        Jacobi preconditioner: the diagonal of ``cov_y`` for a standard normal prior,
        ``Sigma_y + sigma_t^2 / (1 + sigma_t^2) diag(A A^T)``.
        """
        s2 = _per_item(sigma_t.to(torch.float64) ** 2, r)
        diagonal = var.expand_as(r).to(torch.float64) + s2 / (1 + s2) * self.diag_AAt
        v, res = conjugate_gradient(
            cov_y, r, iterations=self.cg_iterations, inverse_diagonal=1.0 / diagonal
        )
        residual = res.flatten(1).norm(dim=1) / r.to(torch.float64).flatten(1).norm(
            dim=1
        ).clamp_min(1e-30)
        bad = (
            ~torch.isfinite(residual)
            | (residual > self.resolve_threshold)
            | ~torch.isfinite(v).flatten(1).all(1)
        )
        if not bad.any():
            return v
        lam = self.regularization * (var.expand_as(r).flatten(1).mean(1) + sigma_t**2)
        lam = _per_item(lam, r)
        v_reg, _ = conjugate_gradient(
            lambda p: cov_y(p) + lam * p,
            r,
            iterations=self.cg_iterations,
            inverse_diagonal=1.0 / (diagonal + lam),
        )
        v_reg = torch.nan_to_num(v_reg, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.where(_per_item(bad, v).bool(), v_reg, v)


def operator_diagonal(
    operators: Sequence[LinearOperator],
    shapes: Sequence[tuple],
    y: Tensor,
    *,
    item_ids: Sequence[int] | None = None,
    probes: int = 16,
) -> Tensor:
    """Hutchinson estimate of ``diag(sum_b A_b A_b^T)``, shape ``(B, *obs_shape)`` like ``y``.

    ``E[(A z)^2] = diag(A A^T)`` for Rademacher ``z``. The probes of observation ``i``
    are seeded by its identifier ``item_ids[i]`` (default ``i``), so the estimate does
    not depend on how a set is split into chunks or shards. It only shapes the CG
    preconditioner: 16 probes suffice.
    """
    ids = range(y.shape[0]) if item_ids is None else item_ids
    rows = []
    for i, item in enumerate(ids):
        g = torch.Generator(y.device).manual_seed(int(item))
        repeat = torch.full((probes,), i, device=y.device)
        d = torch.zeros(probes, *y.shape[1:], dtype=torch.float64, device=y.device)
        for A, shape in zip(operators, shapes):
            z = torch.randint(0, 2, (probes, *shape), generator=g, device=y.device)
            d += A[repeat].forward(2.0 * z.to(y.dtype) - 1.0).to(torch.float64) ** 2
        rows.append(d.mean(0))
    return torch.stack(rows)


def validate_problem(
    priors: Sequence, y: Tensor, operators: Sequence[LinearOperator], noise_variance
) -> Tensor:
    """Check shapes and values of a posterior problem; returns the noise variance as a tensor.

    Raises
    ------
    InputError
        Naming the argument: lengths of ``priors`` and ``operators`` differ, an
        operator output does not have ``y``'s shape, ``noise_variance`` does not
        broadcast or is not > 0, or ``y`` holds NaN or infinity.
    """
    if not isinstance(y, Tensor) or y.ndim < 2:
        raise InputError(
            f"y: expected a tensor of shape (B, *obs_shape), got {getattr(y, 'shape', type(y))}"
        )
    if len(priors) != len(operators):
        raise InputError(
            f"operators: {len(operators)} operators for {len(priors)} priors "
            "(one per source expected)"
        )
    if not torch.isfinite(y).all():
        raise InputError(f"y: {int((~torch.isfinite(y)).sum())} values are NaN or infinite")
    obs_shape = tuple(y.shape[1:])
    for b, (prior, A) in enumerate(zip(priors, operators)):
        probe = torch.zeros(1, *prior.shape, dtype=y.dtype, device=y.device)
        try:
            out_shape = tuple(A[0:1].forward(probe).shape[1:])
        except (RuntimeError, ValueError, IndexError) as err:
            raise InputError(
                f"operators[{b}]: cannot be applied to a source of shape "
                f"{tuple(prior.shape)} ({err})"
            ) from err
        if out_shape != obs_shape:
            raise InputError(
                f"operators[{b}]: maps source shape {tuple(prior.shape)} to {out_shape}, "
                f"but y has obs shape {obs_shape}"
            )
    var = torch.as_tensor(noise_variance, dtype=y.dtype, device=y.device)
    try:
        torch.broadcast_shapes(var.shape, y.shape)
    except RuntimeError as err:
        raise InputError(
            f"noise_variance: shape {tuple(var.shape)} "
            f"does not broadcast against y {tuple(y.shape)}"
        ) from err
    if torch.broadcast_shapes(var.shape, y.shape) != y.shape:
        raise InputError(
            f"noise_variance: shape {tuple(var.shape)} is larger than y {tuple(y.shape)}"
        )
    if not (torch.isfinite(var) & (var > 0)).all():
        raise InputError(
            "noise_variance: must be finite and > 0 everywhere "
            "(mask bad pixels in the operator instead)"
        )
    return var


def select_items(var: Tensor, index: Tensor, y: Tensor) -> Tensor:
    """Rows ``index`` of a per-observation variance (first axis of length ``len(y)`` and
    ``y``'s number of axes); a variance shared by all observations is returned as is."""
    if var.ndim == y.ndim and var.shape[0] == y.shape[0]:
        return var[index]
    return var


def _common_schedule(priors: Sequence) -> VESchedule:
    """The envelope of the priors' noise ranges: all sources share one diffusion time."""
    return VESchedule(
        min(p.schedule.sigma_min for p in priors), max(p.schedule.sigma_max for p in priors)
    )


def sample_posterior(
    priors: Sequence,
    y: Tensor,
    operators: Sequence[LinearOperator],
    noise_variance: Tensor | float,
    *,
    n_samples: int = 1,
    sampler: str = "pc",
    steps: int = 64,
    corrections: int = 1,
    tau: float = 0.1,
    cg_iterations: int = 1,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    item_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> list[Tensor]:
    """Sample every source jointly from its posterior given each observation.

    Parameters
    ----------
    priors : list
        One prior per source (:class:`GaussianPrior` or :class:`DiffusionPrior`).
    y : Tensor, shape ``(B, *obs_shape)``
        Observations.
    operators : list of LinearOperator
        ``A_b`` per source, batched over the ``B`` observations (per-item
        parameters are sliced with ``A[index]``).
    noise_variance : Tensor or float
        Broadcasts against ``y``; per-item when its first axis has length ``B``.
    n_samples : int
        Posterior samples per observation.
    sampler, steps, corrections, tau : see :func:`galdeblend.diffusion.samplers.sample`
    cg_iterations : int
        Conjugate-gradient iterations of the MMPS solve.
    seed : int
        Seeds each chunk of ``batch_size // n_samples`` observations from its
        identifiers (see :func:`chunk_generator`).
    batch_size : int
        Number of (observation, sample) pairs denoised at once; bounds memory.
    item_ids : sequence of int, optional
        Global identifiers of the ``B`` observations (default ``0 .. B-1``) that
        seed their draws.

    Returns
    -------
    list of Tensor
        Per source, ``(B, n_samples, *shape_b)``.
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler: must be one of {SAMPLERS}, got {sampler!r}")
    var = validate_problem(priors, y, operators, noise_variance)
    B = y.shape[0]
    ids = list(range(B)) if item_ids is None else [int(i) for i in item_ids]
    if len(ids) != B:
        raise InputError(f"item_ids: {len(ids)} identifiers for {B} observations")
    schedule = _common_schedule(priors)
    shapes = [tuple(p.shape) for p in priors]
    results: list[list[Tensor]] = [[] for _ in priors]
    items = torch.arange(B, device=y.device).repeat_interleave(n_samples)
    per_chunk = max(batch_size // n_samples, 1) * n_samples
    for start in range(0, len(items), per_chunk):
        index = items[start : start + per_chunk]
        generator = chunk_generator(seed, ids[int(index[0])], len(index), y.device)
        seen, where = index.unique_consecutive(return_inverse=True)
        diag_AAt = operator_diagonal(
            [A[seen] for A in operators], shapes, y[seen], item_ids=[ids[int(i)] for i in seen]
        )
        joint = JointPosteriorDenoiser(
            priors,
            [A[index] for A in operators],
            y[index],
            select_items(var, index, y),
            cg_iterations=cg_iterations,
            diag_AAt=diag_AAt[where],
        )
        u = sample(
            joint,
            schedule,
            (len(index), sum(joint.sizes)),
            sampler=sampler,
            steps=steps,
            corrections=corrections,
            tau=tau,
            generator=generator,
            dtype=y.dtype,
            device=y.device,
            progress=progress,
        )
        for b, x in enumerate(joint.split(u)):
            results[b].append(x.detach())
    return [torch.cat(r).reshape(B, n_samples, *p.shape) for r, p in zip(results, priors)]


def chunk_generator(seed: int, first_id: int, size: int, device) -> torch.Generator:
    """The generator of a chunk of ``size`` draws starting at observation ``first_id``.

    A chunk's samples depend only on ``seed`` and the identifiers and size of the
    chunk, so shards that split a set at chunk boundaries reproduce the
    single-process samples exactly.
    """
    return torch.Generator(device).manual_seed(
        hash((int(seed), int(first_id), int(size))) & 0x7FFF_FFFF_FFFF_FFFF
    )
