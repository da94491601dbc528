"""log p(x) from the probability-flow ODE against closed-form Gaussian densities."""

import torch

from galdeblend.engine import GaussianPrior, log_prob


def gaussian(D, seed):
    g = torch.Generator().manual_seed(seed)
    return GaussianPrior(
        torch.randn(D, generator=g, dtype=torch.float64),
        0.5 + torch.rand(D, generator=g, dtype=torch.float64),
        torch.randn(D, 2, generator=g, dtype=torch.float64) * 0.7,
        sigma_min=1e-3,
        sigma_max=1e3,
    )


def test_exact_divergence_matches_gaussian_density():
    prior = gaussian(8, 0)
    x = prior.sample(6, seed=1)
    lp = log_prob(
        prior,
        x,
    )
    assert ((lp - prior.log_prob(x)).abs() / 8 < 1e-2).all()


def test_hutchinson_matches_gaussian_density():
    D = 100
    prior = gaussian(D, 2)
    x = prior.sample(4, seed=3)
    lp = log_prob(prior, x, probes=4, seed=0)
    assert ((lp - prior.log_prob(x)).abs() / D < 1e-2).all()
