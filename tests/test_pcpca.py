"""PCPCA: planted target subspace, stationarity of the closed form, projected fit, posterior."""

import pytest
import torch

from galdeblend.baselines import PCPCA
from galdeblend.baselines.pcpca import contrastive_log_likelihood
from galdeblend.errors import InputError
from galdeblend.operators import Matrix

DT = torch.float64
D = 5


def planted(n=4000, seed=0):
    """Background: large variance along e_0; target: background + variance along u."""
    g = torch.Generator().manual_seed(seed)
    u = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0], dtype=DT) / 3**0.5
    e0 = torch.eye(D, dtype=DT)[0]

    def draw(with_target):
        x = (
            0.1 * torch.randn(n, D, generator=g, dtype=DT)
            + 2.0 * torch.randn(n, 1, generator=g, dtype=DT) * e0
        )
        if with_target:
            x = x + torch.randn(n, 1, generator=g, dtype=DT) * u
        return x

    return draw(True), draw(False), u, e0


def test_contrast_recovers_the_planted_target_direction():
    target, background, u, e0 = planted()
    plain = PCPCA(rank=1, gamma=0.0).fit(target, background)
    contrastive = PCPCA(rank=1, gamma=0.9).fit(target, background)
    cos = lambda w, v: float((w[:, 0] @ v).abs() / w[:, 0].norm())  # noqa: E731
    assert cos(plain.factors, e0) > 0.99  # PPCA of the target picks the background's direction
    assert cos(contrastive.factors, u) > 0.99
    # Variance along u: 1 in the target, 0 in the background, so u^T C u = n / (n - gamma m).
    assert float(contrastive.factors[:, 0].norm() ** 2) == pytest.approx(10.0, rel=0.1)


def test_closed_form_is_a_stationary_point_of_the_contrastive_likelihood():
    target, background, _, _ = planted(n=500)
    model = PCPCA(rank=2, gamma=0.5).fit(target, background)
    eye = torch.eye(D, dtype=DT)
    params = [model.mean.clone().requires_grad_(True), model.factors.clone().requires_grad_(True)]
    var = torch.tensor(model.noise_variance, dtype=DT, requires_grad=True)
    L = contrastive_log_likelihood(
        target,
        background,
        eye.expand(500, D, D),
        eye.expand(500, D, D),
        params[0],
        params[1],
        var,
        0.5,
    )
    grads = torch.autograd.grad(L, [*params, var])
    for grad in grads:
        assert float(grad.abs().max()) < 1e-6 * 500


def projections(n, g):
    M = torch.randn(n, 3, D, generator=g, dtype=DT)
    return Matrix(M / M.norm(dim=2, keepdim=True))


def test_projected_fit_is_consistent_with_the_unprojected_fit():
    target, background, u, _ = planted(n=20000, seed=1)
    g = torch.Generator().manual_seed(2)
    A, B = projections(20000, g), projections(20000, g)
    var = 1e-4
    y = A.forward(target) + var**0.5 * torch.randn(20000, 3, generator=g, dtype=DT)
    b = B.forward(background) + var**0.5 * torch.randn(20000, 3, generator=g, dtype=DT)
    model = PCPCA(rank=1, gamma=0.9).fit(
        y, b, target_operator=A, background_operator=B, noise_variance=var
    )
    reference = PCPCA(rank=1, gamma=0.9).fit(
        target, background, noise_variance=0.01
    )  # the signals' own noise
    w = model.factors[:, 0]
    assert float((w @ u).abs() / w.norm()) > 0.98
    assert float(w.norm() ** 2) == pytest.approx(float(reference.factors.norm() ** 2), rel=0.1)
    assert (
        float(model.mean.norm()) < 0.5
    )  # the planted mean is 0; gamma = 0.9 amplifies its error tenfold


def test_posterior_matches_dense_gaussian_conditioning():
    target, background, _, _ = planted(n=500)
    model = PCPCA(rank=2, gamma=0.5).fit(target, background, noise_variance=0.01)
    g = torch.Generator().manual_seed(3)
    A = projections(4, g)
    y = torch.randn(4, 3, generator=g, dtype=DT)
    mean, cov = model.posterior(y, A)
    P = model.factors @ model.factors.T
    for i in range(4):
        Ai = A.M[i]
        S = Ai @ P @ Ai.T + 0.01 * torch.eye(3, dtype=DT)
        gain = P @ Ai.T @ torch.linalg.inv(S)
        torch.testing.assert_close(mean[i], model.mean + gain @ (y[i] - Ai @ model.mean))
        torch.testing.assert_close(cov[i], P - gain @ Ai @ P)
    draws = model.sample_posterior(y, A, n_samples=20000, seed=0)
    assert float((draws.mean(1) - mean).abs().max()) < 0.05
    torch.testing.assert_close(
        torch.einsum("bsi,bsj->bij", draws - mean[:, None], draws - mean[:, None]) / 20000,
        cov,
        atol=0.03,
        rtol=0.05,
    )


def test_bad_input():
    target, background, _, _ = planted(n=100)
    with pytest.raises(InputError, match="gamma must be < n / m"):
        PCPCA(rank=1, gamma=1.0).fit(target, background)
    with pytest.raises(InputError, match="noise_variance must be given"):
        A = Matrix(torch.eye(3, D, dtype=DT))
        PCPCA(rank=1, gamma=0.5).fit(
            target[:, :3], background[:, :3], target_operator=A, background_operator=A
        )
    with pytest.raises(InputError, match="target must be a tensor of shape"):
        PCPCA(rank=1, gamma=0.5).fit(target[0], background)
    with pytest.raises(InputError, match="call fit first"):
        PCPCA(rank=1, gamma=0.5).posterior(target)
    with pytest.raises(InputError, match="rank must be >= 1"):
        PCPCA(rank=0, gamma=0.5)


def test_shared_operator_posterior_equals_the_per_observation_one():
    target, background, _, _ = planted(n=300)
    model = PCPCA(rank=2, gamma=0.5).fit(target, background)
    g = torch.Generator().manual_seed(3)
    M = torch.randn(3, D, generator=g, dtype=DT)
    y = torch.randn(7, 3, generator=g, dtype=DT)
    shared_mean, shared_cov = model.posterior(y, Matrix(M))
    mean, cov = model.posterior(y, Matrix(M.expand(7, 3, D).clone()))
    torch.testing.assert_close(shared_mean, mean)
    torch.testing.assert_close(shared_cov, cov)
    draws = model.sample_posterior(y, Matrix(M), n_samples=4000, seed=1)
    assert draws.shape == (7, 4000, D)
    torch.testing.assert_close(draws.mean(1), mean, atol=0.1, rtol=0)
