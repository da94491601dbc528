"""Gaussian prior: analytic denoiser, PPCA / factor-analysis fit, density, save/load."""

import math

import torch

from galdeblend.engine import GaussianPrior, load_prior


def planted(D=12, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    U = torch.randn(D, r, generator=g, dtype=torch.float64)
    d = 0.1 + torch.rand(D, generator=g, dtype=torch.float64)
    return GaussianPrior(mean, d, U)


def test_denoiser_is_the_closed_form():
    prior = planted()
    Sigma = prior.covariance()
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 12, generator=g, dtype=torch.float64) * 3
    sigma = torch.tensor([0.01, 0.5, 2.0, 30.0], dtype=torch.float64)
    out = prior(x_t, sigma)
    for i in range(4):
        K = Sigma @ torch.linalg.inv(Sigma + sigma[i] ** 2 * torch.eye(12, dtype=torch.float64))
        torch.testing.assert_close(out[i], prior.mean + K @ (x_t[i] - prior.mean))


def test_denoiser_at_one_noise_level_for_the_batch_is_the_closed_form():
    prior = planted()
    Sigma = prior.covariance()
    x_t = torch.randn(3, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigma = torch.full((3,), 0.7, dtype=torch.float64)
    K = Sigma @ torch.linalg.inv(Sigma + 0.49 * torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close(prior(x_t, sigma), prior.mean + (x_t - prior.mean) @ K.T)


def test_log_prob_and_sample():
    prior = planted()
    x = prior.sample(5, seed=3)
    ref = torch.distributions.MultivariateNormal(prior.mean, prior.covariance()).log_prob(x)
    torch.testing.assert_close(prior.log_prob(x), ref)


def test_fit_recovers_planted_covariance():
    truth = planted(D=20, r=3, seed=4)
    x = truth.sample(40000, seed=5)
    fitted = GaussianPrior(torch.zeros(20, dtype=torch.float64), 1.0).fit(x, rank=3)
    err = torch.linalg.norm(fitted.covariance() - truth.covariance()) / torch.linalg.norm(
        truth.covariance()
    )
    assert err < 0.03
    assert torch.linalg.norm(fitted.mean - truth.mean) < 0.05 * math.sqrt(20)
    # PPCA alone (isotropic noise) cannot fit a non-isotropic diagonal: factor analysis must help.
    ppca = GaussianPrior(torch.zeros(20, dtype=torch.float64), 1.0).fit(x, rank=3, iterations=0)
    err_ppca = torch.linalg.norm(ppca.covariance() - truth.covariance()) / torch.linalg.norm(
        truth.covariance()
    )
    assert err < err_ppca


def test_save_load_round_trip(tmp_path):
    prior = planted()
    prior.save(tmp_path / "g")
    loaded = load_prior(tmp_path / "g")
    assert isinstance(loaded, GaussianPrior)
    torch.testing.assert_close(loaded.covariance(), prior.covariance())
    assert loaded.schedule == prior.schedule


def test_fit_with_rank_above_the_dimension():
    """A 2 x 2 sky grid (D = 4) fitted with the default rank 16: D factors, and the full
    covariance is recovered."""
    truth = planted(D=4, r=2, seed=6)
    x = truth.sample(40000, seed=7)
    fitted = GaussianPrior(torch.zeros(4, dtype=torch.float64), 1.0).fit(x, rank=16)
    assert fitted.rank == 4
    err = torch.linalg.norm(fitted.covariance() - truth.covariance()) / torch.linalg.norm(
        truth.covariance()
    )
    assert err < 0.03


def test_smooth_prior_has_unit_variance_and_no_pixel_scale_power():
    fwhm = 6.0
    prior = GaussianPrior.smooth((2, 24, 24), fwhm, floor=1e-3)
    assert prior.rank == 2 * 6 * 6  # spacing 1.5 * 6 / 2.355 = 3.8 pixels
    cov = prior.covariance().reshape(2, 24, 24, 2, 24, 24)
    inner = cov[0, 6:18, 6:18, 0, 6:18, 6:18].reshape(144, 144)
    assert 0.88 < float(inner.diagonal().min()) and float(inner.diagonal().max()) < 1.001
    # neighbouring pixels are almost fully correlated; the planes are independent
    var = cov[0, 12, 12, 0, 12, 12]
    assert float(cov[0, 12, 12, 0, 12, 13] / var) > 0.9
    assert float(cov[0, :, :, 1].abs().max()) == 0.0
    # the checkerboard (Nyquist) pattern keeps the floor's variance (N(0, I) would give 1)
    y, x = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    v = torch.zeros(2, 24, 24)
    v[0] = (-1.0) ** (y + x) / 24.0
    v = v.reshape(-1).double()
    assert float(v @ prior.covariance().double() @ v) < 1.1e-3
