"""Probabilistic contrastive PCA (Li, Zhang & Zou 2020), with linear observations.

Model of the target-specific signal ``s`` seen through an observation operator::

    s = mu + W z,   z ~ N(0, I_r)          (W of shape (D, r))
    y = A s + n,    n ~ N(0, sigma^2 I)

so that ``y ~ N(A mu, A W W^T A^T + sigma^2 I)``. PCPCA maximizes the contrastive
log-likelihood of ``n`` target (enriched) observations ``y_i`` and ``m`` background
observations ``b_j``::

    L = sum_i log N(y_i; A_i mu, Sigma_i) - gamma sum_j log N(b_j; B_j mu, Sigma_j)

which rewards directions with more variance in the target set than (``gamma``
times) in the background set; ``0 <= gamma < n / m``.

- Without operators (``A = I``) the maximum is closed form (Li et al. 2020, Sec. 4)
  and depends on the data only through the means ``m_t, m_b`` and covariances
  ``S_t, S_b`` of the two sets: ``mu = (n m_t - gamma m m_b) / (n - gamma m)``,
  ``C = (n [S_t + d_t d_t^T] - gamma m [S_b + d_b d_b^T]) / (n - gamma m)`` with
  ``d = m - mu``, and ``W = U_r (Lambda_r - sigma^2 I)_+^{1/2}`` from the top ``r``
  eigenpairs of ``C``,
  ``sigma^2`` (unless given) the mean of the other eigenvalues.
- With one operator per observation (random projections to fewer dimensions than
  the signal, as in the DDPRISM contrastive benchmarks, arXiv:2510.05205, Sec. 4.1),
  ``L`` has no closed-form maximum and is in general unbounded (``mu`` and ``W``
  can diverge together: L-BFGS on it does, on the 1-D manifold benchmark).
  We therefore keep the closed form and estimate the signal moments of each set
  from its projections by least squares, ``E[y_i] = A_i m`` and
  ``E[y_i y_i^T] = A_i (S + m m^T) A_i^T + sigma^2 I``, which is consistent: with
  many observations it gives the same fit as PCPCA on the unprojected signals.
  ``sigma^2`` is then the known noise variance, already removed from ``S``, so
  ``W = U_r Lambda_r^{1/2}``.

The target-specific source of an observation is estimated by the Gaussian
posterior of ``s`` given ``y`` under the fitted model (:meth:`PCPCA.posterior`),
as DDPRISM does for its PCPCA baseline: the background's own contribution to ``y``
is not modelled, which is the linear method's handicap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from galdeblend.errors import InputError
from galdeblend.operators.base import LinearOperator

__all__ = ["PCPCA"]


class PCPCA:
    """Probabilistic contrastive PCA of rank ``rank`` and contrast ``gamma``.

    Parameters
    ----------
    rank : int
        Number ``r`` of target-specific latent dimensions.
    gamma : float
        Weight of the background log-likelihood, ``0 <= gamma < n / m``.

    Attributes
    ----------
    mean : Tensor, shape (D,)
        ``mu``, set by :meth:`fit`.
    factors : Tensor, shape (D, r)
        ``W``, set by :meth:`fit`.
    noise_variance : float
        ``sigma^2``, set by :meth:`fit`.
    """

    def __init__(self, rank: int, gamma: float):
        if int(rank) < 1:
            raise InputError(f"PCPCA: rank must be >= 1, got {rank}")
        if not gamma >= 0:
            raise InputError(f"PCPCA: gamma must be >= 0, got {gamma}")
        self.rank = int(rank)
        self.gamma = float(gamma)
        self.mean: Tensor | None = None
        self.factors: Tensor | None = None
        self.noise_variance: float | None = None

    def fit(
        self,
        target: Tensor,
        background: Tensor,
        *,
        target_operator: LinearOperator | None = None,
        background_operator: LinearOperator | None = None,
        noise_variance: float | None = None,
    ) -> PCPCA:
        """Fit ``(mu, W, sigma^2)`` to the target and background observations.

        Parameters
        ----------
        target : Tensor, shape (n, M)
            Target (enriched) observations.
        background : Tensor, shape (m, M)
            Background observations.
        target_operator, background_operator : LinearOperator, optional
            Batched maps ``(n, D) -> (n, M)`` and ``(m, D) -> (m, M)`` (e.g.
            :class:`~galdeblend.operators.Matrix` with one matrix per observation).
            Give both or neither; without them ``M = D``.
        noise_variance : float, optional
            Known ``sigma^2``; required with operators, estimated without.

        Returns
        -------
        PCPCA
            ``self``.
        """
        n, m = _check_data(target, "target"), _check_data(background, "background")
        if target.shape[1] != background.shape[1]:
            raise InputError(
                f"PCPCA.fit: target has {target.shape[1]} values per observation, "
                f"background {background.shape[1]}"
            )
        if self.gamma * m >= n:
            raise InputError(
                f"PCPCA: gamma must be < n / m = {n}/{m} for a bounded likelihood, got {self.gamma}"
            )
        if (target_operator is None) != (background_operator is None):
            raise InputError(
                "PCPCA.fit: give both target_operator and background_operator, or neither"
            )
        if target_operator is None:
            moments = [_sample_moments(x.double()) for x in (target, background)]
            noise_in_moments = True
        else:
            if noise_variance is None or not noise_variance > 0:
                raise InputError(
                    "PCPCA.fit: noise_variance must be given and > 0 with operators, "
                    f"got {noise_variance}"
                )
            moments = [
                _projected_moments(
                    x.double(), _dense(op, len(x), name).expand(len(x), -1, -1), noise_variance
                )
                for x, op, name in (
                    (target, target_operator, "target_operator"),
                    (background, background_operator, "background_operator"),
                )
            ]
            noise_in_moments = False
        self.mean, self.factors, self.noise_variance = _closed_form(
            n, *moments[0], m, *moments[1], self.gamma, self.rank, noise_variance, noise_in_moments
        )
        return self

    def posterior(self, y: Tensor, operator: LinearOperator | None = None) -> tuple[Tensor, Tensor]:
        """Gaussian posterior of the target-specific signal ``s`` given ``y = A s + n``.

        Parameters
        ----------
        y : Tensor, shape (B, M)
        operator : LinearOperator, optional
            ``A``, batched over the ``B`` observations (identity if omitted).

        Returns
        -------
        mean : Tensor, shape (B, D)
            ``mu + W W^T A^T S^-1 (y - A mu)`` with ``S = A W W^T A^T + sigma^2 I``.
        covariance : Tensor, shape (B, D, D)
            ``W W^T - W W^T A^T S^-1 A W W^T``.
        """
        mean, covariance = self._posterior(y, operator)
        return mean.to(y.dtype), covariance.expand(len(y), *covariance.shape[-2:]).to(y.dtype)

    def _posterior(self, y: Tensor, operator: LinearOperator | None) -> tuple[Tensor, Tensor]:
        """:meth:`posterior` in float64, the covariance ``(D, D)`` when ``A`` is shared."""
        if self.factors is None:
            raise InputError("PCPCA.posterior: call fit first")
        B = _check_data(y, "y")
        D = self.factors.shape[0]
        # A: (M, D) when shared by every observation (computed once), else (B, M, D).
        A = (
            torch.eye(D, dtype=torch.float64, device=y.device)
            if operator is None
            else _dense(operator, B, "operator")
        )
        if A.shape[-2] != y.shape[1]:
            raise InputError(
                f"PCPCA.posterior: y has {y.shape[1]} values per observation, "
                f"the operator gives {A.shape[-2]}"
            )
        AW = A @ self.factors  # (..., M, r)
        S = AW @ AW.mT + self.noise_variance * torch.eye(
            A.shape[-2], dtype=torch.float64, device=A.device
        )
        K = self.factors @ torch.linalg.solve(S, AW).mT  # (..., D, M): W W^T A^T S^-1
        residual = y.double() - (A @ self.mean).expand(B, -1)  # (B, M)
        mean = self.mean + (K @ residual.unsqueeze(-1)).squeeze(-1)
        WWt = self.factors @ self.factors.T
        return mean, WWt - K @ A @ WWt

    def sample_posterior(
        self,
        y: Tensor,
        operator: LinearOperator | None = None,
        *,
        n_samples: int = 1,
        seed: int = 0,
    ) -> Tensor:
        """Draws ``(B, n_samples, D)`` from :meth:`posterior`."""
        mean, covariance = self._posterior(y, operator)
        # The posterior covariance has rank <= r; factor it by eigendecomposition.
        eigenvalues, vectors = torch.linalg.eigh(covariance)
        root = vectors * eigenvalues.clamp_min(0).sqrt().unsqueeze(-2)
        g = torch.Generator(mean.device).manual_seed(seed)
        z = torch.randn(
            mean.shape[0],
            n_samples,
            mean.shape[1],
            generator=g,
            dtype=torch.float64,
            device=mean.device,
        )
        return (mean.unsqueeze(1) + z @ root.mT).to(y.dtype)


def contrastive_log_likelihood(
    y: Tensor,
    b: Tensor,
    A: Tensor,
    B: Tensor,
    mean: Tensor,
    factors: Tensor,
    noise_variance: float,
    gamma: float,
) -> Tensor:
    """``L`` of the module docstring; dense operators ``A`` ``(n, M, D)``, ``B`` ``(m, M, D)``."""
    return _log_likelihood(y, A, mean, factors, noise_variance) - gamma * _log_likelihood(
        b, B, mean, factors, noise_variance
    )


def _log_likelihood(
    y: Tensor, A: Tensor, mean: Tensor, factors: Tensor, noise_variance: float
) -> Tensor:
    """``sum_i log N(y_i; A_i mu, A_i W W^T A_i^T + sigma^2 I)``."""
    M = y.shape[1]
    AW = A @ factors
    S = AW @ AW.transpose(1, 2) + noise_variance * torch.eye(M, dtype=y.dtype, device=y.device)
    r = y - A @ mean
    quadratic = (r * torch.linalg.solve(S, r)).sum(1)
    return -0.5 * (quadratic + torch.linalg.slogdet(S)[1] + M * math.log(2 * math.pi)).sum()


def _closed_form(
    n: int,
    mean_t: Tensor,
    cov_t: Tensor,
    m: int,
    mean_b: Tensor,
    cov_b: Tensor,
    gamma: float,
    rank: int,
    noise_variance: float | None,
    noise_in_moments: bool,
) -> tuple[Tensor, Tensor, float]:
    """Maximum of the contrastive likelihood from the two sets' moments: ``(mu, W, sigma^2)``."""
    D = mean_t.shape[0]
    if rank > D:
        raise InputError(f"PCPCA: rank {rank} exceeds the signal dimension {D}")
    scale = n - gamma * m
    mu = (n * mean_t - gamma * m * mean_b) / scale
    dt, db = mean_t - mu, mean_b - mu
    C = (n * (cov_t + torch.outer(dt, dt)) - gamma * m * (cov_b + torch.outer(db, db))) / scale
    eigenvalues, vectors = torch.linalg.eigh((C + C.T) / 2)
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    if noise_variance is None:
        rest = eigenvalues[rank:]
        noise_variance = float(rest.mean().clamp_min(1e-12)) if rest.numel() else 1e-12
    removed = noise_variance if noise_in_moments else 0.0
    factors = vectors[:, :rank] * (eigenvalues[:rank] - removed).clamp_min(0).sqrt()
    return mu, factors.contiguous(), float(noise_variance)


def _sample_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(D,)`` and maximum-likelihood covariance ``(D, D)`` of ``x`` ``(N, D)``."""
    mean = x.mean(0)
    xc = x - mean
    return mean, xc.T @ xc / x.shape[0]


def _projected_moments(y: Tensor, A: Tensor, noise_variance: float) -> tuple[Tensor, Tensor]:
    """Least-squares signal mean ``(D,)`` and covariance ``(D, D)`` from ``y_i = A_i s_i + n_i``.

    ``m`` minimizes ``sum_i |y_i - A_i m|^2`` and the second moment ``R`` minimizes
    ``sum_i |A_i R A_i^T - (y_i y_i^T - sigma^2 I)|_F^2``, whose normal equations are
    ``sum_i (A_i^T A_i (x) A_i^T A_i) vec R = sum_i vec(A_i^T (y_i y_i^T - sigma^2 I) A_i)``.
    """
    N, M, D = A.shape
    AtA = A.transpose(1, 2) @ A  # (N, D, D)
    mean = torch.linalg.solve(AtA.sum(0), (A.transpose(1, 2) @ y.unsqueeze(-1)).sum(0)).squeeze(-1)
    Y = y.unsqueeze(-1) * y.unsqueeze(-2) - noise_variance * torch.eye(
        M, dtype=y.dtype, device=y.device
    )
    normal = torch.einsum("nij,nkl->ikjl", AtA, AtA).reshape(D * D, D * D)
    rhs = (A.transpose(1, 2) @ Y @ A).sum(0).reshape(D * D)
    R = torch.linalg.solve(normal, rhs).reshape(D, D)
    return mean, (R + R.T) / 2 - torch.outer(mean, mean)


def _dense(operator: LinearOperator, N: int, name: str) -> Tensor:
    """The matrix ``(M, D)`` (one for all) or ``(N, M, D)`` of an operator, in float64."""
    M = getattr(operator, "M", None)
    if isinstance(M, Tensor) and M.ndim == 3 and M.shape[0] in (1, N):
        return M.double() if M.shape[0] == N else M[0].double()
    if isinstance(M, Tensor) and M.ndim == 2:
        return M.double()
    raise InputError(
        f"PCPCA: {name} must be a galdeblend.operators.Matrix, got {type(operator).__name__}"
    )


def _check_data(x: Tensor, name: str) -> int:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] < 2:
        raise InputError(
            f"PCPCA: {name} must be a tensor of shape (N, features) with N >= 2, "
            f"got {getattr(x, 'shape', type(x))}"
        )
    if not torch.isfinite(x).all():
        raise InputError(f"PCPCA: {name} holds NaN or infinite values")
    return x.shape[0]
