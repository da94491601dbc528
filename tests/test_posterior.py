"""MMPS joint posterior sampling against the exact Gaussian posterior; input checks."""

import pytest
import torch

from galdeblend.engine import GaussianPrior, sample_posterior
from galdeblend.errors import InputError
from galdeblend.operators import Identity, Matrix
from galdeblend.posterior import conjugate_gradient, operator_diagonal


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


def test_jacobi_preconditioned_cg_solves_a_diagonal_system_in_one_iteration():
    d = torch.tensor([[1e-4, 1e-2, 1.0, 30.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    x, r = conjugate_gradient(lambda v: d * v, b, iterations=1, inverse_diagonal=1 / d)
    torch.testing.assert_close(x, b / d)
    assert r.abs().max() < 1e-9
    x_plain, _ = conjugate_gradient(lambda v: d * v, b, iterations=1)
    assert (x_plain - b / d).abs().max() > 0.5 * (b / d).abs().max()


def test_operator_diagonal_estimates_the_row_norms():
    g = torch.Generator().manual_seed(4)
    A1 = torch.randn(6, 4, generator=g, dtype=torch.float64)
    A2 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    ops, shapes = [Matrix(A1), Matrix(A2)], [(4,), (3,)]
    y = torch.zeros(2, 6, dtype=torch.float64)
    exact = (A1**2).sum(1) + (A2**2).sum(1)
    d = operator_diagonal(ops, shapes, y, probes=4000)
    assert d.shape == (2, 6)
    torch.testing.assert_close(d, exact.expand(2, 6), rtol=0.1, atol=0)
    # An observation's estimate depends on its identifier only, not on its batch.
    both = operator_diagonal(ops, shapes, y, item_ids=[7, 9])
    alone = operator_diagonal(ops, shapes, y[:1], item_ids=[9])
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=0)
    assert not torch.equal(both[0], both[1])
    # Rademacher probes are exact for a diagonal operator, with any number of probes.
    scale = torch.tensor([[0.5, 2.0, 3.0]], dtype=torch.float64)
    d1 = operator_diagonal([Matrix(torch.diag(scale[0]))], [(3,)], torch.zeros(1, 3), probes=1)
    torch.testing.assert_close(d1, scale**2)


def test_one_cg_iteration_weights_each_survey_by_its_own_noise():
    # Two "bands" of one source seen with noise variances 1e-3 and 1 (HST F814W and HSC y
    # in adu differ by 130x): with one CG iteration the posterior mean must stay within a
    # quarter of a posterior standard deviation of the exact one. Unpreconditioned CG
    # scales every residual by one scalar set by the noisy band and misses the precise
    # band by 10 standard deviations.
    g = torch.Generator().manual_seed(3)
    dt = torch.float64
    prior = GaussianPrior(
        torch.zeros(4, dtype=dt),
        0.5,
        torch.randn(4, 2, generator=g, dtype=dt),
        sigma_min=1e-3,
        sigma_max=50.0,
    )
    var = torch.tensor([1e-3, 1e-3, 1.0, 1.0], dtype=dt)
    y = torch.tensor([[1.0, -0.5, 2.0, 0.3]], dtype=dt)
    (x,) = sample_posterior(
        [prior],
        y,
        [Matrix(torch.eye(4, dtype=dt))],
        var,
        n_samples=2048,
        steps=64,
        seed=0,
        cg_iterations=1,
        batch_size=2048,
    )
    Sigma = prior.covariance()
    gain = Sigma @ torch.linalg.inv(Sigma + torch.diag(var))
    mean, cov = gain @ y[0], Sigma - gain @ Sigma
    std = torch.diag(cov).sqrt()
    assert torch.all((x[0].mean(0) - mean).abs() < 0.25 * std + 3 * std / 2048**0.5)


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
