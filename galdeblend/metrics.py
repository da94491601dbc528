"""Metrics of a deblend against the truth: image fidelity, photometry, shapes, calibration.

Every function takes plain arrays (numpy arrays, or anything :func:`numpy.asarray` accepts,
torch tensors included) and returns numpy values.

- image fidelity: :func:`psnr`, :func:`ssim` (Wang et al. 2004);
- photometry: :func:`aperture_flux`, :func:`flux_error` (photutils circular apertures);
- shapes: :func:`shape_moments`, :func:`shape_error` (galsim.hsm adaptive moments);
- posterior calibration: :func:`coverage` of the central posterior intervals, and
  :func:`pooled_fraction`, a coverage over many galaxies with its standard error;
- goodness of fit: :func:`chi2_per_pixel`;
- prior quality: :func:`pqmass` (the ``pqm`` package, from the ``bench`` extra) and
  :func:`frechet_distance` between feature sets (e.g. a classifier's embeddings);
- tables: :func:`summarize` (median and 68% range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import galsim
import numpy as np
from photutils.aperture import CircularAperture, aperture_photometry
from scipy.ndimage import gaussian_filter
from scipy.stats import chi2 as chi2_distribution

from galdeblend.errors import InputError

__all__ = [
    "psnr",
    "ssim",
    "aperture_flux",
    "flux_error",
    "ShapeMoments",
    "ShapeError",
    "shape_moments",
    "shape_error",
    "ellipticity_response",
    "pit",
    "inside_intervals",
    "coverage",
    "pooled_fraction",
    "chi2_per_pixel",
    "PQMassResult",
    "pqmass",
    "frechet_distance",
    "Summary",
    "summarize",
]


def _as_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float64 numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: expected a numeric array, got {type(value).__name__}") from error


def _validate_same_shape(
    estimate: Any, truth: Any, *, names: tuple[str, str] = ("estimate", "truth")
) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64, checked to have the same shape."""
    a, b = _as_array(estimate, names[0]), _as_array(truth, names[1])
    if a.shape != b.shape:
        raise InputError(f"{names[0]} has shape {a.shape} but {names[1]} has shape {b.shape}")
    return a, b


def _validate_images(image: np.ndarray, name: str) -> np.ndarray:
    """An image of shape (H, W) or (C, H, W) as (C, H, W)."""
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise InputError(
            f"{name}: expected an image of shape (H, W) or (C, H, W), got {image.shape}"
        )
    return image


def _data_range(truth: np.ndarray, given: float | None, name: str) -> float:
    """``given``, or the dynamic range ``max - min`` of the truth; must be > 0."""
    value = float(truth.max() - truth.min()) if given is None else float(given)
    if not value > 0:
        raise InputError(
            f"{name} must be > 0 (it defaults to truth.max() - truth.min(), which is 0 for a "
            f"constant truth), got {value}"
        )
    return value


def psnr(estimate: Any, truth: Any, *, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(peak^2 / MSE)``.

    Parameters
    ----------
    estimate, truth : array, any shape (same for both)
        The estimated and the true image(s); the mean squared error runs over every element.
    peak : float, optional
        Peak signal. Default: the dynamic range of the truth, ``truth.max() - truth.min()``.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the estimate equals the truth.
    """
    x, y = _validate_same_shape(estimate, truth)
    peak = _data_range(y, peak, "peak")
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak**2 / mse))


def ssim(
    estimate: Any,
    truth: Any,
    *,
    data_range: float | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity index (Wang et al. 2004) with a Gaussian window.

    Local means, variances and covariance are Gaussian-weighted averages (window ``sigma``
    pixels, truncated at 3.5 sigma, reflecting boundaries); the SSIM map

    ``(2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``,

    with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` and ``L`` the data range, is averaged over the
    pixels at least one window radius from the edge (over all pixels if the image is smaller)
    and over the leading axes.

    Parameters
    ----------
    estimate, truth : array, shape (..., H, W)
        Images; every leading index is a separate 2-D image.
    data_range : float, optional
        ``L``. Default: ``truth.max() - truth.min()``.
    sigma : float
        Standard deviation of the Gaussian window in pixels.
    k1, k2 : float
        Stabilizing constants of Wang et al. (2004).

    Returns
    -------
    float
        Mean SSIM, 1 for identical images.
    """
    x, y = _validate_same_shape(estimate, truth)
    if x.ndim < 2:
        raise InputError(f"ssim: expected images of shape (..., H, W), got {x.shape}")
    dynamic_range = _data_range(y, data_range, "data_range")
    c1, c2 = (k1 * dynamic_range) ** 2, (k2 * dynamic_range) ** 2
    window = [0.0] * (x.ndim - 2) + [sigma, sigma]

    def local_mean(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, window, mode="reflect", truncate=3.5)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) > 2 * radius:
        ssim_map = ssim_map[..., radius:-radius, radius:-radius]
    return float(ssim_map.mean())


def aperture_flux(image: Any, positions: Any, radius: float) -> np.ndarray:
    """Flux in circular apertures, per band (photutils exact pixel overlap).

    Parameters
    ----------
    image : array, shape (H, W) or (C, H, W)
        The image; a 2-D image is one band.
    positions : array, shape (2,) or (N, 2)
        Aperture centres ``(x, y)`` in 0-based pixel coordinates (x along the last axis).
    radius : float
        Aperture radius in pixels.

    Returns
    -------
    ndarray, shape (C,) or (N, C)
        Summed flux per aperture and band (``(C,)`` for a single ``(2,)`` position).
    """
    images = _validate_images(_as_array(image, "image"), "image")
    xy = _as_array(positions, "positions")
    if xy.shape[-1:] != (2,) or xy.ndim > 2:
        raise InputError(f"positions: expected shape (2,) or (N, 2) of (x, y), got {xy.shape}")
    if not radius > 0:
        raise InputError(f"radius must be > 0 pixels, got {radius}")
    apertures = CircularAperture(np.atleast_2d(xy), r=radius)
    flux = np.stack(
        [np.asarray(aperture_photometry(band, apertures)["aperture_sum"]) for band in images],
        axis=-1,
    )
    return flux[0] if xy.ndim == 1 else flux


def flux_error(estimate: Any, truth: Any, positions: Any, radius: float) -> np.ndarray:
    """Fractional aperture-flux error ``(F_estimate - F_truth) / F_truth`` per galaxy and band.

    Parameters
    ----------
    estimate, truth : array, shape (N, C, H, W)
        Galaxy ``n``'s deblended and true images (``(C, H, W)`` or ``(H, W)`` for a single
        galaxy).
    positions : array, shape (N, 2)
        Each galaxy's true centre ``(x, y)`` in 0-based pixels (``(2,)`` for a single galaxy).
    radius : float
        Aperture radius in pixels.

    Returns
    -------
    ndarray, shape (N, C)
        Fractional flux errors (``(C,)`` for a single galaxy).
    """
    x, y = _validate_same_shape(estimate, truth)
    xy = _as_array(positions, "positions")
    if xy.ndim == 1:
        single = (_validate_images(x, "estimate")[None], _validate_images(y, "truth")[None])
        return flux_error(*single, xy[None], radius)[0]
    if x.ndim != 4 or xy.shape != (x.shape[0], 2):
        raise InputError(
            f"flux_error: expected images (N, C, H, W) and positions (N, 2), got {x.shape} "
            f"and {xy.shape}"
        )
    errors = []
    for image_estimate, image_truth, position in zip(x, y, xy, strict=True):
        true_flux = aperture_flux(image_truth, position, radius)
        errors.append((aperture_flux(image_estimate, position, radius) - true_flux) / true_flux)
    return np.stack(errors)


@dataclass(frozen=True)
class ShapeMoments:
    """Adaptive second moments of galaxy images (galsim.hsm).

    Every field has the leading shape of the images measured (``()`` for one 2-D image).

    Attributes
    ----------
    e1, e2 : ndarray
        Distortion ellipticity ``(a^2 - b^2) / (a^2 + b^2)`` along the pixel axes and at 45
        degrees; NaN where the measurement failed.
    sigma : ndarray
        Determinant radius ``det(M)^(1/4)`` of the adaptive moments, in arcsec; NaN on failure.
    ok : ndarray of bool
        False where galsim.hsm failed (non-convergence, empty or negative image).
    """

    e1: np.ndarray
    e2: np.ndarray
    sigma: np.ndarray
    ok: np.ndarray


@dataclass(frozen=True)
class ShapeError:
    """Estimated minus true shape (fields shaped like the :class:`ShapeMoments` compared).

    Attributes
    ----------
    e1, e2 : ndarray
        Ellipticity differences.
    size : ndarray
        Fractional size error ``sigma_estimate / sigma_truth - 1``.
    """

    e1: np.ndarray
    e2: np.ndarray
    size: np.ndarray


def shape_moments(
    image: Any, *, pixel_scale: float, centroid: Sequence[float] | None = None
) -> ShapeMoments:
    """Measure ellipticity and size with galsim's adaptive moments (``FindAdaptiveMom``).

    Parameters
    ----------
    image : array, shape (..., H, W)
        Image(s) of one galaxy each; every leading index is measured separately.
    pixel_scale : float
        Pixel scale in arcsec, to give ``sigma`` in arcsec.
    centroid : (float, float), optional
        Starting centre ``(x, y)`` in 0-based pixels. Default: galsim's, the image centre.

    Returns
    -------
    ShapeMoments
        Fields shaped ``image.shape[:-2]``; failures give NaN and ``ok = False`` instead of
        raising.
    """
    images = _as_array(image, "image")
    if images.ndim < 2:
        raise InputError(f"shape_moments: expected images (..., H, W), got {images.shape}")
    if not pixel_scale > 0:
        raise InputError(f"pixel_scale must be > 0 arcsec, got {pixel_scale}")
    guess = None if centroid is None else galsim.PositionD(centroid[0] + 1.0, centroid[1] + 1.0)
    leading = images.shape[:-2]
    fields = {name: np.full(leading, np.nan) for name in ("e1", "e2", "sigma")}
    ok = np.zeros(leading, dtype=bool)
    for index in np.ndindex(*leading):
        try:
            moments = galsim.hsm.FindAdaptiveMom(
                galsim.Image(np.ascontiguousarray(images[index]), scale=pixel_scale),
                guess_centroid=guess,
                strict=False,
            )
        except galsim.GalSimError:
            continue
        if moments.moments_status != 0:
            continue
        ok[index] = True
        fields["e1"][index] = moments.observed_shape.e1
        fields["e2"][index] = moments.observed_shape.e2
        fields["sigma"][index] = moments.moments_sigma * pixel_scale
    return ShapeMoments(**fields, ok=ok)


def shape_error(estimate: ShapeMoments, truth: ShapeMoments) -> ShapeError:
    """Shape error of an estimate against the truth; NaN where either measurement failed.

    Parameters
    ----------
    estimate, truth : ShapeMoments
        Moments of the deblended and of the true images (same field shapes).

    Returns
    -------
    ShapeError
    """
    return ShapeError(
        e1=estimate.e1 - truth.e1,
        e2=estimate.e2 - truth.e2,
        size=estimate.sigma / truth.sigma - 1.0,
    )


def ellipticity_response(
    e_estimate: Any, e_true: Any, groups: Any | None = None
) -> tuple[float, float, int]:
    """Response of estimated to true ellipticities: the ``1 + m`` of shear calibration.

    The least-squares slope through the origin of the estimated on the true components,
    ``R = sum(e_estimate . e_true) / sum(|e_true|^2)`` over both components of every row: 1
    for unbiased shapes, below 1 for shapes shrunk towards round (as a prior of too round
    galaxies makes them), above 1 for shapes stretched. Its standard error is the
    cluster-robust one, ``sqrt(sum_g (sum_{i in g} e_true_i . r_i)^2) / sum(|e_true|^2)``
    with residuals ``r = e_estimate - R e_true``, so that rows of one group (the bands of one
    galaxy) are not counted as independent; without ``groups`` each row is its own group.

    Parameters
    ----------
    e_estimate, e_true : array, shape (N, 2)
        ``(e1, e2)`` per row; rows with a NaN in either are left out.
    groups : array, shape (N,), optional
        Group label of each row.

    Returns
    -------
    (R, standard error, number of rows used); NaN and 0 when no true shape is elongated.
    """
    est, true = _validate_same_shape(e_estimate, e_true, names=("e_estimate", "e_true"))
    if est.ndim != 2 or est.shape[1] != 2:
        raise InputError(f"ellipticity_response: expected (N, 2) ellipticities, got {est.shape}")
    labels = np.arange(len(est)) if groups is None else np.asarray(groups)
    if labels.shape != (len(est),):
        raise InputError(f"ellipticity_response: groups must be ({len(est)},), got {labels.shape}")
    keep = np.isfinite(est).all(1) & np.isfinite(true).all(1)
    est, true, labels = est[keep], true[keep], labels[keep]
    norm = float(np.sum(true**2))
    if norm == 0.0:
        return float("nan"), float("nan"), 0
    response = float(np.sum(est * true)) / norm
    score = np.sum(true * (est - response * true), axis=1)  # (N,)
    _, group_index = np.unique(labels, return_inverse=True)
    per_group = np.bincount(group_index.ravel(), weights=score)
    return response, float(np.sqrt(np.sum(per_group**2)) / norm), int(len(est))


def pit(samples: Any, truth: Any, *, seed: int = 0) -> np.ndarray:
    """Randomized probability integral transform of true values under their samples.

    ``u = (R + V) / (S + 1)`` with ``R`` the number of the ``S`` samples below the true value
    (ties broken at random) and ``V ~ U(0, 1)``. When the true value is a draw from the same
    distribution as the samples (a calibrated posterior) ``R`` is uniform on ``0 .. S`` and
    ``u`` is exactly uniform on (0, 1), whatever ``S``: no finite-sample bias, unlike the
    quantiles of a few samples, whose range holds a calibrated truth only with probability
    ``(S - 1) / (S + 1)``.

    Parameters
    ----------
    samples : array, shape (S, ...)
        ``S`` posterior samples.
    truth : array, shape (...)
        The true values.
    seed : int
        Seed of the tie-breaking and of ``V``.

    Returns
    -------
    ndarray, shape (...)
    """
    draws, values = _as_array(samples, "samples"), _as_array(truth, "truth")
    if draws.ndim < 1 or draws.shape[1:] != values.shape:
        raise InputError(
            f"pit: samples must have shape (S, *truth.shape) = (S, *{values.shape}), "
            f"got {draws.shape}"
        )
    rng = np.random.default_rng(seed)
    below = (draws < values).sum(axis=0)
    ties = (draws == values).sum(axis=0)
    rank = below + rng.integers(0, ties + 1)
    return (rank + rng.uniform(size=values.shape)) / (draws.shape[0] + 1)


def inside_intervals(
    samples: Any, truth: Any, levels: Sequence[float], *, seed: int = 0
) -> np.ndarray:
    """Whether each true value lies inside the central posterior interval of each level.

    A true value is inside the interval of level ``l`` when its probability integral
    transform :func:`pit` satisfies ``|u - 1/2| <= l / 2``, which holds with probability
    ``l`` for a calibrated posterior whatever the number of samples.

    Parameters
    ----------
    samples : array, shape (S, ...)
        ``S >= 2`` posterior samples.
    truth : array, shape (...)
        The true values.
    levels : sequence of float in (0, 1)
        Credible levels.
    seed : int
        Seed of :func:`pit`.

    Returns
    -------
    ndarray of bool, shape (L, ...)
    """
    draws = _as_array(samples, "samples")
    if draws.ndim >= 1 and draws.shape[0] < 2:
        raise InputError(f"coverage: need at least 2 samples along axis 0, got {draws.shape[0]}")
    for level in levels:
        if not 0.0 < level < 1.0:
            raise InputError(f"coverage: levels must lie in (0, 1), got {level}")
    u = pit(draws, truth, seed=seed)
    return np.stack([np.abs(u - 0.5) <= level / 2.0 for level in levels])


def coverage(
    samples: Any, truth: Any, levels: Sequence[float] = (0.68, 0.95), *, seed: int = 0
) -> dict[float, float]:
    """Fraction of true values inside the central posterior credible intervals.

    See :func:`inside_intervals`; a calibrated posterior gives a fraction ``l`` in
    expectation for any number of samples. Works for pixels (samples of images) and for any
    derived quantity, e.g. fluxes (samples of shape (S, N, C) against true fluxes (N, C)).

    Parameters
    ----------
    samples : array, shape (S, ...)
        ``S >= 2`` posterior samples.
    truth : array, shape (...)
        The true values.
    levels : sequence of float in (0, 1)
        Credible levels.
    seed : int
        Seed of :func:`pit`.

    Returns
    -------
    dict
        ``{level: fraction of truth elements inside the interval}``.
    """
    inside = inside_intervals(samples, truth, levels, seed=seed)
    return {level: float(inside[i].mean()) for i, level in enumerate(levels)}


def pooled_fraction(inside: Any, groups: Sequence[Any]) -> tuple[float, float, int]:
    """Fraction of true values inside their intervals, pooled, with a standard error that
    lets the values of one group share their errors.

    The bands of one galaxy miss or hold the truth together (one sharing error moves every
    band's flux), so the ``N`` values are not ``N`` independent trials and the binomial
    error ``sqrt(p (1 - p) / N)`` is too small. With ``G`` groups holding ``n_g`` values,
    ``m_g`` of them inside, and ``p = sum m_g / N``, the error is the cluster-robust one of
    a ratio,

        se = sqrt(G / (G - 1) * sum_g (m_g - p n_g)^2) / N,

    which is ``sqrt(p (1 - p) / (N - 1))`` for groups of one and ``sqrt(p (1 - p) / (G - 1))``
    when every group's values agree.

    Parameters
    ----------
    inside : array of bool, shape (N,)
        Whether each true value lies inside its interval (:func:`inside_intervals`).
    groups : sequence, length N
        A label per value (e.g. ``"blend/galaxy"``); values with one label form a group.

    Returns
    -------
    p : float
        The pooled fraction (NaN for no values).
    se : float
        Its standard error (NaN for fewer than two groups).
    n : int
        ``N``.
    """
    values = _as_array(inside, "inside").ravel()
    labels = np.asarray(groups)
    if labels.shape != values.shape:
        raise InputError(
            f"pooled_fraction: need one group label per value, got {labels.shape} labels "
            f"for {values.shape} values"
        )
    n = values.size
    if n == 0:
        return float("nan"), float("nan"), 0
    p = float(values.mean())
    _, group_index = np.unique(labels, return_inverse=True)
    residual = np.bincount(group_index, weights=values - p)  # m_g - p n_g
    G = residual.size
    se = float(np.sqrt(G / (G - 1) * np.sum(residual**2)) / n) if G > 1 else float("nan")
    return p, se, n


def chi2_per_pixel(data: Any, model: Any, variance: Any, mask: Any | None = None) -> float:
    """Reduced residual chi-square, ``mean((data - model)^2 / variance)`` over good pixels.

    Parameters
    ----------
    data, model : array, shape (C, H, W) (any shape, the same for both)
        Observed pixels and the model (e.g. the posterior mean seen through the instrument).
    variance : array, broadcastable to ``data``
        Noise variance, > 0 on good pixels.
    mask : array of bool, broadcastable to ``data``, optional
        True where a pixel is bad and left out (the :class:`~galdeblend.io.Observation`
        convention).

    Returns
    -------
    float
        About 1 for a model that fits to the noise.
    """
    d, m = _validate_same_shape(data, model, names=("data", "model"))
    try:
        var = np.broadcast_to(_as_array(variance, "variance"), d.shape)
        bad = (
            np.zeros(d.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask), d.shape)
        )
    except ValueError as error:
        raise InputError(
            f"chi2_per_pixel: variance or mask does not broadcast to {d.shape}"
        ) from error
    good = ~bad.astype(bool)
    if not good.any():
        raise InputError("chi2_per_pixel: every pixel is masked")
    if not np.all(var[good] > 0):
        raise InputError("chi2_per_pixel: variance must be > 0 on unmasked pixels")
    return float(np.mean((d[good] - m[good]) ** 2 / var[good]))


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (as in FID).

    ``|m_a - m_b|^2 + Tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`` with the mean and
    covariance of each set computed separately.

    Parameters
    ----------
    features_a : array, shape (N, F)
    features_b : array, shape (M, F)

    Returns
    -------
    float
    """
    a, b = _as_array(features_a, "features_a"), _as_array(features_b, "features_b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise InputError(
            f"frechet_distance: expected features (N, F) and (M, F) with N, M >= 2, got "
            f"{a.shape} and {b.shape}"
        )
    a, b = a.astype(np.float64), b.astype(np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root_a @ cov_b @ root_a)
    mean_term = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean_term + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


@dataclass(frozen=True)
class PQMassResult:
    """PQMass two-sample test results, one per tessellation of the space.

    Attributes
    ----------
    pvalue : ndarray, shape (T,)
        p-values of the null hypothesis that both sample sets share one distribution.
    chi2 : ndarray, shape (T,)
        The matching chi-square statistics, ``dof`` degrees of freedom (expected ``dof`` under
        the null hypothesis).
    dof : int
        Degrees of freedom, ``num_refs - 1``.
    """

    pvalue: np.ndarray
    chi2: np.ndarray
    dof: int


def pqmass(
    samples_a: Any,
    samples_b: Any,
    *,
    num_refs: int = 100,
    n_tessellations: int = 10,
    seed: int = 0,
    reference_fraction: float | None = None,
) -> PQMassResult:
    """PQMass test (Lemos et al. 2024, the ``pqm`` package) between two sets of samples.

    Parameters
    ----------
    samples_a : array, shape (N, ...)
        E.g. samples from the learned prior, shape (N, C, H, W); flattened per sample.
    samples_b : array, shape (M, ...)
        E.g. true galaxy images, same trailing shape.
    num_refs : int
        Reference points of each Voronoi tessellation (fewer than ``(N + M) / 2``).
    n_tessellations : int
        Independent tessellations; one p-value each.
    seed : int
        Seed of the reference draws (numpy's global generator is seeded for the call and
        restored afterwards, since ``pqm`` draws from it).
    reference_fraction : float in [0, 1], optional
        Fraction of the references drawn from ``samples_a`` (the rest from ``samples_b``);
        default ``N / (N + M)``. ``1.0`` draws them all from ``samples_a``, which keeps the
        test valid when ``samples_b`` is too small to give up references (``pqm`` needs
        more than 2 samples of a set left beyond the references drawn from it).

    Returns
    -------
    PQMassResult

    Raises
    ------
    ImportError
        If ``pqm`` is missing (install the ``bench`` extra: ``pip install galdeblend[bench]``).
    """
    try:
        from pqm import pqm_pvalue
    except ImportError as error:
        raise ImportError(
            "pqmass needs the pqm package: pip install 'galdeblend[bench]' (or pip install pqm)"
        ) from error
    a, b = _as_array(samples_a, "samples_a"), _as_array(samples_b, "samples_b")
    if a.ndim < 2 or a.shape[1:] != b.shape[1:]:
        raise InputError(
            f"pqmass: expected samples (N, ...) and (M, ...) with equal trailing shapes, got "
            f"{a.shape} and {b.shape}"
        )
    if a.shape[0] + b.shape[0] < 2 * num_refs:
        raise InputError(
            f"pqmass: num_refs={num_refs} needs at least {2 * num_refs} samples in all, got "
            f"{a.shape[0] + b.shape[0]}"
        )
    if reference_fraction is not None and not 0.0 <= reference_fraction <= 1.0:
        raise InputError(f"pqmass: reference_fraction must be in [0, 1], got {reference_fraction}")
    if reference_fraction == 1.0 and (num_refs >= a.shape[0] - 2 or b.shape[0] < 3):
        raise InputError(
            f"pqmass: num_refs={num_refs} references drawn from samples_a need more than "
            f"{num_refs + 2} samples in it and at least 3 in samples_b, got {a.shape[0]} and "
            f"{b.shape[0]}"
        )
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    # pqm draws its references from numpy's global generator: seed it, then restore it.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        pvalues = np.array(
            [
                pqm_pvalue(a, b, num_refs=num_refs, x_frac=reference_fraction)
                for _ in range(n_tessellations)
            ],
            dtype=float,
        )
    finally:
        np.random.set_state(state)  # noqa: NPY002
    dof = num_refs - 1
    return PQMassResult(pvalue=pvalues, chi2=chi2_distribution.isf(pvalues, dof), dof=dof)


@dataclass(frozen=True)
class Summary:
    """Median and central 68% range of a metric over galaxies or blends.

    Attributes
    ----------
    median, low, high : float
        50th, 16th and 84th percentiles (NaN values left out; all NaN if none is finite).
    count : int
        Number of finite values summarized.
    """

    median: float
    low: float
    high: float
    count: int


def summarize(values: Any) -> Summary:
    """Median and 68% range (16th to 84th percentile) of the finite values.

    Parameters
    ----------
    values : array, any shape
        Metric values; NaN and infinities (failed measurements) are left out.

    Returns
    -------
    Summary
    """
    flat = _as_array(values, "values").ravel()
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        return Summary(median=np.nan, low=np.nan, high=np.nan, count=0)
    low, median, high = np.percentile(finite, [16.0, 50.0, 84.0])
    return Summary(median=float(median), low=float(low), high=float(high), count=int(finite.size))
