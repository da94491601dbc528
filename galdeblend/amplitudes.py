"""The amplitude step: each galaxy's flux per band redrawn from the data, shapes kept.

A galaxy's prior works in units of a flux scale measured per band from the noisy data
(:mod:`galdeblend.scene`), so the prior knows nothing about colours and little about a
band's amplitude: in faint bands the sampled amplitudes follow the prior's typical
amplitude more than the data. The amplitude step hands the amplitudes back to the
likelihood. For every posterior sample ``s`` (shapes ``x_bs`` of every source ``b``), the
galaxy ``k``'s plane ``c`` is multiplied by ``a_kc``, and the amplitudes ``a`` (one per galaxy
and band) are drawn from their conditional posterior given everything else:

    y = sum_(k, c) a_kc t_kcs + r_s + noise,   t_kcs = A_k (x_ks restricted to plane c),

where ``r_s = sum_sky A_b x_bs`` is the sample's sky and the noise is Gaussian with the data's
variance ``Sigma``. With a Gaussian prior ``a_kc ~ N(1, width^2)`` (the amplitude of the
diffusion sample, give or take ``width``) the conditional is Gaussian,

    F = T Sigma^-1 T^T + I / width^2,   a ~ N(F^-1 (T Sigma^-1 (y - r_s) + 1 / width^2), F^-1),

the amplitude half of one Gibbs sweep over the joint posterior of shapes and amplitudes
(the diffusion sampling, at ``a = 1``, being the shape half): one sweep, not a converged
chain. Amplitudes whose templates are zero (a band no observation covers) stay 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from galdeblend.operators.base import LinearOperator

__all__ = ["redraw_amplitudes"]


def _templates(x_s: Tensor, A: LinearOperator) -> Tensor:
    """``(C, N)``: ``A`` applied to each plane of one sample ``x_s`` ``(C, H, W)`` alone."""
    C = x_s.shape[0]
    planes = torch.eye(C, dtype=x_s.dtype)[:, :, None, None] * x_s[None]  # (C, C, H, W)
    return A.forward(planes)


def redraw_amplitudes(
    x: Sequence[Tensor],
    operators: Sequence[LinearOperator],
    y: Tensor,
    noise_variance: Tensor,
    redraw: Sequence[bool],
    *,
    width: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Redraw the per-plane amplitudes of the chosen sources, sample by sample.

    Parameters
    ----------
    x : sequence of Tensor, each (S, C_b, H_b, W_b)
        Posterior samples of every source, in the units ``operators`` take; sample ``s``
        of every source is one joint draw.
    operators : sequence of LinearOperator
        ``A_b``: ``(B, C_b, H_b, W_b) -> (B, N)``.
    y, noise_variance : Tensor, shape (N,)
        The data and its noise variance (pixels that every ``A_b`` zeroes do not count).
    redraw : sequence of bool
        Per source: redraw its amplitudes (galaxies) or keep it as it is (sky).
    width : float
        Standard deviation of the Gaussian prior of each amplitude around 1 (``inf``: a
        flat prior, the weighted least-squares fit and its covariance).
    generator : torch.Generator, optional
        For the draws (CPU).

    Returns
    -------
    list of Tensor
        ``x`` with each redrawn source's plane ``c`` of sample ``s`` times ``a_kcs``; the
        others unchanged. Float64.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    x = [x_b.detach().to("cpu", torch.float64) for x_b in x]
    y = y.to("cpu", torch.float64)
    weight = 1.0 / noise_variance.to("cpu", torch.float64)
    chosen = [b for b, flag in enumerate(redraw) if flag]
    if not chosen:
        return x
    out = [x_b.clone() if flag else x_b for x_b, flag in zip(x, redraw)]
    for s in range(len(x[0])):
        with torch.no_grad():
            r_s = sum(  # the sources kept as they are (the sky)
                (operators[b].forward(x[b][s : s + 1])[0] for b in range(len(x)) if not redraw[b]),
                torch.zeros_like(y),
            )
            T = torch.cat([_templates(x[b][s], operators[b]) for b in chosen])  # (K, N)
        T_w = T * weight  # T Sigma^-1
        fisher = T_w @ T.T  # (K, K)
        observed = fisher.diagonal() > 0
        T_w, fisher = T_w[observed], fisher[observed][:, observed]
        precision = fisher + torch.eye(len(T_w), dtype=T.dtype) / width**2
        rhs = T_w @ (y - r_s) + 1.0 / width**2
        L = torch.linalg.cholesky(precision)
        mean = torch.cholesky_solve(rhs[:, None], L)[:, 0]
        z = torch.randn(len(T_w), dtype=T.dtype, generator=generator)
        # a = mean + L^-T z has covariance (L L^T)^-1 = precision^-1
        a = torch.ones(len(observed), dtype=T.dtype)
        a[observed] = mean + torch.linalg.solve_triangular(L.T, z[:, None], upper=True)[:, 0]
        start = 0
        for b in chosen:
            C = x[b].shape[1]
            out[b][s] = x[b][s] * a[start : start + C, None, None]
            start += C
    return out
