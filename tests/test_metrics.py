"""Metrics against hand-computed values, analytic fluxes, galsim shapes and exact posteriors."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import torch

from galdeblend.errors import InputError
from galdeblend.metrics import (
    aperture_flux,
    chi2_per_pixel,
    coverage,
    ellipticity_response,
    flux_error,
    pit,
    pooled_fraction,
    pqmass,
    psnr,
    shape_error,
    shape_moments,
    ssim,
    summarize,
)


def test_psnr_of_known_mse() -> None:
    truth = np.arange(16.0).reshape(4, 4)  # dynamic range 15
    offsets = np.where(np.indices((4, 4)).sum(0) % 2 == 0, 0.5, -0.5)  # MSE = 0.25
    assert psnr(truth + offsets, truth) == pytest.approx(10 * np.log10(15.0**2 / 0.25))
    assert psnr(truth + offsets, truth, peak=1.0) == pytest.approx(10 * np.log10(1 / 0.25))
    assert psnr(torch.as_tensor(truth), truth) == float("inf")


def test_psnr_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="estimate has shape"):
        psnr(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="peak must be > 0"):
        psnr(np.ones(4), np.ones(4))


def test_ssim_identical_constant_and_symmetric() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(2, 32, 32))
    assert ssim(truth, truth) == pytest.approx(1.0)
    # Constant images: only the luminance term, (2 c1 c2 + C1) / (c1^2 + c2^2 + C1).
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert ssim(np.full((20, 20), 0.25), np.full((20, 20), 0.5), data_range=1.0) == pytest.approx(
        expected
    )
    noisy = truth + 0.5 * rng.normal(size=truth.shape)
    assert ssim(noisy, truth, data_range=5.0) == pytest.approx(ssim(truth, noisy, data_range=5.0))
    assert ssim(noisy, truth) < ssim(truth + 0.1 * (noisy - truth), truth) < 1.0


def test_ssim_matches_scikit_image() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    truth = gaussian_blob(40) + 0.05 * rng.normal(size=(40, 40))
    estimate = truth + 0.1 * rng.normal(size=(40, 40))
    reference = metrics.structural_similarity(
        estimate,
        truth,
        data_range=float(truth.max() - truth.min()),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(estimate, truth) == pytest.approx(reference, rel=1e-10)


def gaussian_blob(size: int, sigma: float = 4.0) -> np.ndarray:
    y, x = np.indices((size, size)) - (size - 1) / 2
    return np.exp(-(x**2 + y**2) / (2 * sigma**2))


def test_aperture_flux_of_uniform_image_is_area() -> None:
    image = np.stack([np.ones((30, 30)), 3 * np.ones((30, 30))])
    flux = aperture_flux(image, (14.3, 15.1), 6.0)
    np.testing.assert_allclose(flux, [np.pi * 36, 3 * np.pi * 36], rtol=1e-10)
    many = aperture_flux(image[0], [[10.0, 10.0], [20.0, 12.0]], 4.0)
    np.testing.assert_allclose(many, np.full((2, 1), np.pi * 16), rtol=1e-10)


def test_aperture_flux_of_galsim_disk_and_flux_error() -> None:
    disk = galsim.TopHat(radius=0.8, flux=500.0)  # radius 4 pixels at 0.2"/pixel
    truth = disk.drawImage(nx=31, ny=31, scale=0.2).array[None].astype(np.float64)
    assert aperture_flux(truth, (15.0, 15.0), 7.0)[0] == pytest.approx(500.0, rel=1e-4)
    estimate = np.concatenate([1.1 * truth, 0.95 * truth])
    truth2 = np.concatenate([truth, truth])
    errors = flux_error(estimate[None], truth2[None], [[15.0, 15.0]], 7.0)
    np.testing.assert_allclose(errors, [[0.1, -0.05]], atol=1e-12)
    np.testing.assert_allclose(flux_error(estimate, truth2, (15.0, 15.0), 7.0), [0.1, -0.05])
    with pytest.raises(InputError, match=r"positions: expected shape \(2,\) or \(N, 2\)"):
        aperture_flux(truth, (1.0, 2.0, 3.0), 2.0)
    with pytest.raises(InputError, match="radius must be > 0"):
        aperture_flux(truth, (1.0, 2.0), 0.0)


def test_shape_moments_of_sheared_gaussian() -> None:
    pixel_scale = 0.1
    stamps = []
    for e1, e2 in [(0.3, -0.2), (-0.1, 0.4)]:
        profile = galsim.Gaussian(sigma=0.5).shear(e1=e1, e2=e2)  # shear keeps det radius
        stamps.append(profile.drawImage(nx=48, ny=48, scale=pixel_scale, method="no_pixel").array)
    moments = shape_moments(np.stack(stamps), pixel_scale=pixel_scale)
    assert moments.ok.all()
    np.testing.assert_allclose(moments.e1, [0.3, -0.1], atol=1e-4)
    np.testing.assert_allclose(moments.e2, [-0.2, 0.4], atol=1e-4)
    np.testing.assert_allclose(moments.sigma, [0.5, 0.5], rtol=1e-4)

    wider = shape_moments(1.2 * np.array(stamps[0]), pixel_scale=pixel_scale / 1.1)
    error = shape_error(wider, shape_moments(stamps[0], pixel_scale=pixel_scale))
    assert error.size == pytest.approx(1 / 1.1 - 1, rel=1e-4)  # flux does not change the size
    assert abs(error.e1) < 1e-6 and abs(error.e2) < 1e-6


def test_shape_moments_failure_gives_nan_and_flag() -> None:
    moments = shape_moments(np.zeros((3, 20, 20)), pixel_scale=0.2)
    assert not moments.ok.any()
    assert np.isnan(moments.e1).all() and np.isnan(moments.sigma).all()
    with pytest.raises(InputError, match="pixel_scale must be > 0"):
        shape_moments(np.zeros((20, 20)), pixel_scale=0.0)


def test_ellipticity_response_closed_form_and_nan_rows() -> None:
    true = np.array([[0.3, 0.0], [0.0, -0.4], [np.nan, 0.1]])
    halved = 0.5 * true
    response, error, n = ellipticity_response(halved, true)
    assert (response, error, n) == (pytest.approx(0.5), pytest.approx(0.0), 2)
    # Hand-computed: slope (0.3*0.3 + 0.4*0.2) / (0.09 + 0.16) = 0.68; residuals
    # (0.096, 0) and (0, 0.072), scores 0.0288 and -0.0288: two groups give
    # sqrt(2) * 0.0288 / 0.25, one group (they cancel) gives 0.
    est = np.array([[0.3, 0.0], [0.0, -0.2], [0.0, 0.0]])
    response, error, _ = ellipticity_response(est, true)
    assert response == pytest.approx(0.68)
    assert error == pytest.approx(np.sqrt(2) * 0.0288 / 0.25)
    assert ellipticity_response(est, true, groups=[7, 7, 7])[1] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(ellipticity_response(np.zeros((2, 2)), np.zeros((2, 2)))[0])
    with pytest.raises(InputError, match=r"expected \(N, 2\)"):
        ellipticity_response(np.zeros((3, 3)), np.zeros((3, 3)))


def test_ellipticity_response_error_holds_the_slope_with_correlated_bands() -> None:
    """Shapes shrunk by 0.7 with noise shared by the 5 bands of each galaxy: the slope
    falls within one cluster-robust standard error of 0.7 about 68% of the time, where
    treating the bands as independent would understate the error."""
    rng = np.random.default_rng(5)
    n_galaxies, bands, trials = 40, 5, 2000
    groups = np.repeat(np.arange(n_galaxies), bands)
    z_grouped, z_independent = [], []
    for _ in range(trials):
        true = np.repeat(rng.normal(0, 0.3, size=(n_galaxies, 2)), bands, axis=0)
        shared = np.repeat(rng.normal(0, 0.1, size=(n_galaxies, 2)), bands, axis=0)
        est = 0.7 * true + shared + rng.normal(0, 0.02, size=true.shape)
        response, error, _ = ellipticity_response(est, true, groups)
        z_grouped.append((response - 0.7) / error)
        z_independent.append((response - 0.7) / ellipticity_response(est, true)[1])
    assert np.mean(np.abs(z_grouped) < 1) == pytest.approx(0.68, abs=0.04)
    assert np.mean(np.abs(z_independent) < 1) < 0.45


def test_coverage_of_exact_gaussian_posterior() -> None:
    # x ~ N(0, 1) per pixel, y = x + N(0, s^2): posterior N(y / (1 + s^2), s^2 / (1 + s^2)).
    rng = np.random.default_rng(3)
    n_pixels, n_samples, noise = 20_000, 400, 0.7
    truth = rng.normal(size=n_pixels)
    data = truth + noise * rng.normal(size=n_pixels)
    mean, std = data / (1 + noise**2), np.sqrt(noise**2 / (1 + noise**2))
    samples = mean + std * rng.normal(size=(n_samples, n_pixels))
    result = coverage(samples.reshape(n_samples, 100, 200), truth.reshape(100, 200))
    assert result[0.68] == pytest.approx(0.68, abs=0.02)
    assert result[0.95] == pytest.approx(0.95, abs=0.02)
    overconfident = coverage(mean + 0.5 * std * rng.normal(size=(n_samples, n_pixels)), truth)
    assert overconfident[0.68] < 0.5 and overconfident[0.95] < 0.8


def test_coverage_with_few_samples_is_unbiased() -> None:
    """Truth and 4 samples from one distribution: the transform is uniform, so the coverage
    is nominal, where the range of 4 samples holds the truth only 3/5 of the time."""
    rng = np.random.default_rng(4)
    draws = rng.normal(size=(5, 50_000))
    samples, truth = draws[:4], draws[4]
    u = pit(samples, truth)
    assert np.histogram(u, bins=10, range=(0, 1))[0] / u.size == pytest.approx(
        np.full(10, 0.1), abs=0.01
    )
    result = coverage(samples, truth, levels=(0.5, 0.95))
    assert result[0.5] == pytest.approx(0.5, abs=0.01)
    assert result[0.95] == pytest.approx(0.95, abs=0.01)
    inside_range = np.mean((truth >= samples.min(0)) & (truth <= samples.max(0)))
    assert inside_range == pytest.approx(3 / 5, abs=0.01)
    # Ties (a discrete posterior) are broken at random: still uniform.
    assert pit(np.zeros((3, 40_000)), np.zeros(40_000)).mean() == pytest.approx(0.5, abs=0.01)


def test_coverage_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputError, match=r"samples must have shape \(S, \*truth.shape\)"):
        coverage(np.zeros((10, 3)), np.zeros(4))
    with pytest.raises(InputError, match=r"levels must lie in \(0, 1\)"):
        coverage(np.zeros((10, 3)), np.zeros(3), levels=(1.5,))


def test_pooled_fraction_standard_error_closed_forms() -> None:
    inside = np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)  # p = 5/8
    p, se, n = pooled_fraction(inside, np.arange(8))
    assert (p, n) == (5 / 8, 8)
    assert se == pytest.approx(np.sqrt(p * (1 - p) / 7))  # groups of one
    # five bands per galaxy that all agree: the error of 8 galaxies, not of 40 values
    p5, se5, n5 = pooled_fraction(np.repeat(inside, 5), np.repeat(np.arange(8), 5))
    assert (p5, n5) == (5 / 8, 40)
    assert se5 == pytest.approx(se)
    assert se5 > 2 * np.sqrt(p5 * (1 - p5) / 40)
    # a group holding 2 of 3, another 0 of 1: p = 1/2, residuals 1/2 and -1/2
    assert pooled_fraction([1, 1, 0, 0], ["a", "a", "a", "b"])[1] == pytest.approx(
        np.sqrt(2 * 0.5) / 4
    )
    assert np.isnan(pooled_fraction([1, 0], ["a", "a"])[1])
    assert np.isnan(pooled_fraction([], [])[0])
    with pytest.raises(InputError, match="one group label per value"):
        pooled_fraction([1, 0], ["a"])


def test_pooled_fraction_error_matches_the_scatter_of_grouped_trials() -> None:
    """Galaxies whose five bands miss together: the standard error matches the scatter of
    the pooled fraction over repeated draws, where the binomial error is too small."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(50), 5)
    fractions, errors = [], []
    for _ in range(400):
        shared = rng.uniform(size=50)[labels]  # one draw per galaxy
        inside = np.where(rng.uniform(size=250) < 0.8, shared, rng.uniform(size=250)) < 0.68
        p, se, _ = pooled_fraction(inside, labels)
        fractions.append(p)
        errors.append(se)
    assert np.mean(errors) == pytest.approx(np.std(fractions), rel=0.15)
    assert np.std(fractions) > 1.5 * np.sqrt(0.68 * 0.32 / 250)


def test_chi2_per_pixel_of_known_residuals() -> None:
    model = np.zeros((2, 2, 2))
    data = np.array([[[1.0, 2.0], [0.0, 3.0]], [[2.0, 2.0], [4.0, 100.0]]])
    variance = np.array([1.0, 4.0])[:, None, None]
    # (1 + 4 + 0 + 9) / 1 + (4 + 4 + 16 + 10000) / 4, over 8 pixels.
    assert chi2_per_pixel(data, model, variance) == pytest.approx((14 + 10024 / 4) / 8)
    mask = np.zeros((2, 2, 2), bool)
    mask[1, 1, 1] = True
    assert chi2_per_pixel(data, model, variance, mask) == pytest.approx((14 + 24 / 4) / 7)
    with pytest.raises(InputError, match="variance must be > 0"):
        chi2_per_pixel(data, model, 0.0)
    with pytest.raises(InputError, match="every pixel is masked"):
        chi2_per_pixel(data, model, variance, np.ones((2, 2, 2), bool))


def test_pqmass_same_and_shifted_distributions() -> None:
    pytest.importorskip("pqm")
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 600, 3, 2))
    same = pqmass(a, b, num_refs=50, n_tessellations=5, seed=1)
    shifted = pqmass(a, b + 0.5, num_refs=50, n_tessellations=5, seed=1)
    assert np.median(same.pvalue) > 0.05
    assert shifted.pvalue.max() < 1e-4
    assert np.median(shifted.chi2) > 2 * shifted.dof
    np.testing.assert_array_equal(
        pqmass(a, b, num_refs=50, n_tessellations=5, seed=1).pvalue, same.pvalue
    )


def test_summarize_percentiles_skip_nan() -> None:
    values = np.append(np.arange(101.0), [np.nan, np.inf])
    summary = summarize(values)
    assert (summary.median, summary.low, summary.high, summary.count) == (50.0, 16.0, 84.0, 101)
    assert np.isnan(summarize([np.nan]).median)


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    from galdeblend.metrics import frechet_distance

    rng = np.random.default_rng(0)
    n = 200_000
    a = rng.normal(size=(n, 3)) * [1.0, 2.0, 3.0]
    b = rng.normal(size=(n, 3)) * [2.0, 2.0, 1.0] + [1.0, 0.0, 0.0]
    # |m_a - m_b|^2 + sum (s_a - s_b)^2 for diagonal covariances: 1 + 1 + 0 + 4.
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError):
        frechet_distance(a, b[:, :2])
