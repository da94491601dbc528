"""Linear contrastive latent variable model (CLVM; Severson, Ghosh & Ng 2019).

Each kind of source is a linear-Gaussian factor model::

    x_k = mu_k + S_k z_k + e_k,   z_k ~ N(0, I_r),   e_k ~ N(0, diag(psi_k))

and each observation is ``y = sum_k A_k x_k + n`` with the known noise ``n``. The
background kind is learned from the background view alone; the target-specific kind
from the target view with the background frozen, so that only the variation the
target adds is attributed to it (the contrastive split of CLVM). The model is fitted
by Monte Carlo EM (:func:`galdeblend.engine.em` with Gaussian priors only: the
E-step draws the exact linear-Gaussian posterior, the M-step is PPCA followed by
factor analysis) and, unlike PCPCA, it handles any linear operators ``A_k``.

This is the linear limit of DDPRISM: the same EM with diffusion priors in place of
the factor models is the method it is compared with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.em import View, em
from galdeblend.errors import InputError
from galdeblend.posterior import sample_posterior

__all__ = ["LinearCLVM"]


class LinearCLVM:
    """Factor models for kinds of sources, learned contrastively from views.

    Parameters
    ----------
    shapes : mapping kind -> tuple of int
        The event shape of each kind, in the order in which they are learned
        (background first).
    rank : int
        Latent dimension ``r`` of every factor model.
    laps : int
        EM laps per kind.
    sampling : mapping, optional
        Options of :func:`~galdeblend.posterior.sample_posterior` for the E-steps.
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int]],
        *,
        rank: int,
        laps: int = 8,
        sampling: Mapping | None = None,
    ):
        if rank < 1 or laps < 1 or not shapes:
            raise InputError(
                f"LinearCLVM: need kinds, rank >= 1 and laps >= 1, got {list(shapes)}, "
                f"rank={rank}, laps={laps}"
            )
        self.shapes = {k: tuple(s) for k, s in shapes.items()}
        self.rank = int(rank)
        self.laps = int(laps)
        self.sampling = dict(sampling or {})
        self.priors: dict[str, GaussianPrior] | None = None

    def fit(self, views: Sequence[View], *, seed: int = 0, progress: bool = False) -> LinearCLVM:
        """Learn the kinds one after the other from ``views``; returns ``self``."""
        init = {
            k: GaussianPrior(torch.zeros(shape, dtype=views[0].y.dtype), 1.0)
            for k, shape in self.shapes.items()
        }
        self.priors = em(
            views,
            init,
            laps=0,
            gaussian_laps=self.laps,
            algorithm="sequential",
            order=list(self.shapes),
            gaussian_rank=self.rank,
            sampling=self.sampling,
            seed=seed,
            progress=progress,
        )
        return self

    def sample_posterior(self, view: View, *, n_samples: int = 1, seed: int = 0) -> list[Tensor]:
        """Posterior draws of every source of ``view``: per source ``(N, n_samples, *shape)``."""
        if self.priors is None:
            raise InputError("LinearCLVM.sample_posterior: call fit first")
        return sample_posterior(
            [self.priors[k] for k in view.sources],
            view.y,
            view.operators,
            view.noise_variance,
            n_samples=n_samples,
            seed=seed,
            **self.sampling,
        )
