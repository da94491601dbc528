"""MMPS joint posterior sampling against the exact Gaussian posterior; input checks."""

import pytest
import torch

from galdeblend.engine import GaussianPrior, sample_posterior
from galdeblend.errors import InputError
from galdeblend.operators import Identity, Matrix


def two_source_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    p1 = GaussianPrior(
        torch.randn(4, generator=g, dtype=dt),
        0.2 + torch.rand(4, generator=g, dtype=dt),
        torch.randn(4, 2, generator=g, dtype=dt),
        sigma_min=1e-3,
        sigma_max=50.0,
    )
    p2 = GaussianPrior(
        torch.randn(3, generator=g, dtype=dt),
        0.3 + torch.rand(3, generator=g, dtype=dt),
        torch.randn(3, 1, generator=g, dtype=dt),
        sigma_min=1e-3,
        sigma_max=50.0,
    )
    A1 = torch.randn(5, 4, generator=g, dtype=dt) / 2
    A2 = torch.randn(5, 3, generator=g, dtype=dt) / 2
    var = 0.05 + 0.1 * torch.rand(5, generator=g, dtype=dt)
    y = torch.randn(1, 5, generator=g, dtype=dt) * 2
    return p1, p2, A1, A2, var, y


def exact_posterior(p1, p2, A1, A2, var, y):
    mu = torch.cat([p1.mean, p2.mean])
    Sigma = torch.block_diag(p1.covariance(), p2.covariance())
    A = torch.cat([A1, A2], dim=1)
    S = A @ Sigma @ A.T + torch.diag(var)
    K = Sigma @ A.T @ torch.linalg.inv(S)
    return mu + K @ (y[0] - A @ mu), Sigma - K @ A @ Sigma


@pytest.mark.parametrize("sampler", ["pc", "ddim"])
def test_mmps_matches_exact_gaussian_posterior(sampler):
    p1, p2, A1, A2, var, y = two_source_problem()
    mean, cov = exact_posterior(p1, p2, A1, A2, var, y)
    n = 4096
    x1, x2 = sample_posterior(
        [p1, p2],
        y,
        [Matrix(A1), Matrix(A2)],
        var,
        n_samples=n,
        sampler=sampler,
        steps=128,
        cg_iterations=8,
        seed=1,
        batch_size=n,
    )
    u = torch.cat([x1[0], x2[0]], dim=1)
    se = (torch.diag(cov) / n).sqrt()
    assert torch.all((u.mean(0) - mean).abs() < 3 * se)
    cov_hat = torch.cov(u.T)
    assert torch.linalg.norm(cov_hat - cov) / torch.linalg.norm(cov) < 0.05


def test_one_cg_iteration_is_exact_for_one_pixel():
    # With a 1-dimensional observation, one CG iteration solves C v = r exactly.
    g = torch.Generator().manual_seed(2)
    p = GaussianPrior(
        torch.zeros(3, dtype=torch.float64),
        1.0,
        torch.randn(3, 1, generator=g, dtype=torch.float64),
        sigma_max=50.0,
    )
    A = torch.randn(1, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([[1.5]], dtype=torch.float64)
    (x,) = sample_posterior(
        [p], y, [Matrix(A)], 0.1, n_samples=4096, steps=64, seed=0, batch_size=4096, sampler="ddim"
    )
    Sigma = p.covariance()
    K = Sigma @ A.T / (A @ Sigma @ A.T + 0.1)
    torch.testing.assert_close(x[0].mean(0), (K @ y[0]), atol=0.05, rtol=0)


def test_samples_are_reproducible_and_shaped():
    p1, p2, A1, A2, var, y = two_source_problem()
    y = y.repeat(3, 1)
    kw = dict(n_samples=2, steps=8, seed=5)
    a = sample_posterior([p1, p2], y, [Matrix(A1), Matrix(A2)], var, **kw)
    b = sample_posterior([p1, p2], y, [Matrix(A1), Matrix(A2)], var, **kw)
    assert a[0].shape == (3, 2, 4) and a[1].shape == (3, 2, 3)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    c = sample_posterior([p1, p2], y, [Matrix(A1), Matrix(A2)], var, **{**kw, "seed": 6})
    assert not torch.equal(a[0], c[0])


def test_bad_input_names_the_argument():
    p1, p2, A1, A2, var, y = two_source_problem()
    ops = [Matrix(A1), Matrix(A2)]
    with pytest.raises(InputError, match=r"operators\[1\]: maps source shape"):
        sample_posterior([p1, p2], y, [Matrix(A1), Matrix(A2[:4])], var)
    with pytest.raises(InputError, match="operators: 1 operators for 2 priors"):
        sample_posterior([p1, p2], y, ops[:1], var)
    with pytest.raises(InputError, match="noise_variance: must be finite and > 0"):
        sample_posterior([p1, p2], y, ops, var * 0)
    with pytest.raises(InputError, match="noise_variance: shape"):
        sample_posterior([p1, p2], y, ops, torch.ones(4))
    with pytest.raises(InputError, match="y: 1 values are NaN"):
        sample_posterior([p1, p2], torch.where(torch.arange(5) == 2, torch.nan, y), ops, var)
    with pytest.raises(InputError, match=r"operators\[0\]: cannot be applied"):
        sample_posterior([p1], y, [Matrix(torch.zeros(5, 7, dtype=torch.float64))], var)
    with pytest.raises(InputError, match="sampler: must be one of"):
        sample_posterior([p1], y, [Identity()], var, sampler="euler")
