"""``galdeblend validate``: score posteriors and baselines against simulated truth.

For every blend of a simulated set (:func:`galdeblend.simulate.simulate_dataset`) that has a
posterior file in the results folder (``galdeblend run`` writes ``<stem>_posterior.fits``,
``<stem>`` the first cutout's file stem), the true galaxies are matched by position to the
posterior's galaxy instances and to the sources of the baselines (photutils and SEP
segmentation, and scarlet2 where it is installed), all in the pixel grid of that first cutout's
survey. Per matched galaxy and band, in that survey's frame:

- the fractional flux error of the aperture flux (photutils aperture photometry in a circle
  of :data:`APERTURE_ARCSEC` radius at the true position; galdeblend: the mean over the
  posterior samples, each pushed through the observation operator; baselines: the segment
  image, or scarlet2's model of the source) against the same aperture on the true noiseless
  galaxy image, and likewise of the total flux over the cutout (which a model stamp smaller
  than the galaxy truncates); the flux error is also given in units of the data's own noise
  in that aperture (the error of plain aperture photometry on an isolated galaxy), so that
  faint and bright galaxies, and methods that found different galaxies, compare on one
  scale;
- for galdeblend, whether the true flux (aperture and total) lies inside the central
  posterior interval of the per-sample fluxes at each level of :data:`LEVELS`, and the
  fraction of the true image's pixels in the aperture that lie inside the central interval
  of the per-sample pixel values;
- PSNR and SSIM of the galaxy image in the observation frame (galdeblend: the posterior mean
  pushed through the observation operator; baselines: the segment image or model) against
  the true noiseless galaxy image.

Per blend: completeness (fraction of true galaxies matched) and, for galdeblend, the residual
chi-square per pixel of the data against the posterior-mean model.

For the prior: PQMass (:func:`galdeblend.metrics.pqmass`) between unconditional samples of the
galaxy prior and the true galaxies of the scored blends brought into the prior's frame, both
normalized per band by their peak pixel (see :func:`validate`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import zlib
from collections.abc import Sequence
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from astropy.table import Table
from scipy.stats import chi2 as chi2_distribution

from galdeblend.errors import InputError
from galdeblend.io.observation import Observation
from galdeblend.metrics import inside_intervals
from galdeblend.results import DeblendResult

if TYPE_CHECKING:
    from galdeblend.baselines.segmentation import BaselineResult
    from galdeblend.io.simulation_fits import SceneTruth
    from galdeblend.metrics import PQMassResult
    from galdeblend.priors import Priors
    from galdeblend.scene import PriorFrame

__all__ = [
    "APERTURE_ARCSEC",
    "LEVELS",
    "PRIOR_STEPS",
    "flux_scores",
    "markdown_table",
    "render_galaxies",
    "score_blend",
    "truth_stamps",
    "validate",
    "widen_psf",
]

log = logging.getLogger("galdeblend")

LEVELS: tuple[float, ...] = (0.5, 0.68, 0.8, 0.9, 0.95)
"""Credible levels of the flux calibration (nominal coverage)."""

APERTURE_ARCSEC = 0.75
"""Radius of the photometry aperture (a 1.5" diameter, a standard aperture of ground-based
survey catalogues; it lies inside the shipped priors' 2.4" galaxy stamp)."""

BASELINE_PACKAGES = {"photutils": "photutils", "sep": "sep", "scarlet2": "scarlet2"}
"""The package each baseline of :func:`validate` imports (a missing one skips it)."""

PRIOR_STEPS = 32
"""Predictor-corrector steps of the prior samples compared with the true galaxies."""


def flux_scores(
    sample_flux: np.ndarray,
    true_flux: np.ndarray,
    levels: Sequence[float] = LEVELS,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional error of the mean flux and interval coverage of the true flux.

    Parameters
    ----------
    sample_flux : ndarray, shape (S, C)
        Flux (aperture or total) per posterior sample and band (``S = 1`` for a point
        estimate).
    true_flux : ndarray, shape (C,)
        The same flux of the true galaxy per band.
    levels : sequence of float in (0, 1)
        Credible levels ``l`` of the central intervals
        (:func:`galdeblend.metrics.inside_intervals`: from the probability integral
        transform of the true flux under the samples, calibrated at any number of samples).
    seed : int
        Seed of the randomized transform.

    Returns
    -------
    error : ndarray, shape (C,)
        ``(mean_s F_s - F_true) / F_true``.
    inside : ndarray of bool, shape (L, C)
        Whether the true flux lies inside each level's interval (False with a single sample).
    """
    flux = np.asarray(sample_flux, dtype=np.float64)
    truth = np.asarray(true_flux, dtype=np.float64)
    if flux.ndim != 2 or flux.shape[1:] != truth.shape:
        raise InputError(
            f"flux_scores: expected sample fluxes (S, C) and true fluxes (C,), got {flux.shape} "
            f"and {truth.shape}"
        )
    error = (flux.mean(axis=0) - truth) / truth
    inside = np.zeros((len(levels), truth.size), dtype=bool)
    if len(flux) > 1:
        inside = inside_intervals(flux, truth, levels, seed=seed)
    return error, inside


def pixel_scores(
    sample_images: np.ndarray,
    true_image: np.ndarray,
    xy: tuple[float, float],
    radius: float,
    levels: Sequence[float] = LEVELS,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Fraction of the true pixels in a circle that lie inside the posterior intervals.

    Parameters
    ----------
    sample_images : ndarray, shape (S, C, H, W)
        The galaxy's image per posterior sample.
    true_image : ndarray, shape (C, H, W)
        The true noiseless galaxy image.
    xy : (float, float)
        Centre of the circle in pixels (``x`` the column; photutils' convention, pixel
        centres at integers).
    radius : float
        Radius of the circle in pixels; the pixels whose centres lie within it count.
    levels : sequence of float in (0, 1)
        Credible levels of the central intervals
        (:func:`galdeblend.metrics.inside_intervals`).
    seed : int
        Seed of the randomized transform.

    Returns
    -------
    ndarray, shape (L, C)
        Per level and band, the fraction of the circle's pixels whose true value lies inside
        the interval; NaN with a single sample or no pixel in the circle.
    """
    samples = np.asarray(sample_images, dtype=np.float64)
    truth = np.asarray(true_image, dtype=np.float64)
    if samples.ndim != 4 or samples.shape[1:] != truth.shape:
        raise InputError(
            f"pixel_scores: expected sample images (S, C, H, W) and a true image (C, H, W), "
            f"got {samples.shape} and {truth.shape}"
        )
    rows, columns = np.indices(truth.shape[1:])
    in_circle = np.hypot(columns - xy[0], rows - xy[1]) <= radius
    if len(samples) < 2 or not in_circle.any():
        return np.full((len(levels), truth.shape[0]), np.nan)
    inside = inside_intervals(samples[..., in_circle], truth[..., in_circle], levels, seed=seed)
    return inside.mean(axis=-1)


def _image_scores(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and SSIM per band of one galaxy image ``(C, H, W)`` against the truth."""
    from galdeblend.metrics import psnr, ssim

    scores = np.full((2, truth.shape[0]), np.nan)
    for c, (x, y) in enumerate(zip(estimate, truth, strict=True)):
        if y.max() > y.min():
            scores[:, c] = psnr(x, y), ssim(x, y)
    return scores[0], scores[1]


def render_galaxies(result: DeblendResult, obs: Observation) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each galaxy seen in ``obs`` without its mask: ``(mean (C_obs, H, W), samples (S, C_obs,
    H, W))``."""
    from galdeblend.frames import Frame, observation_operator

    unmasked = Frame(obs.shape, obs.wcs, obs.bands, obs.psf)
    images = []
    for gal in result.galaxies:
        operator = observation_operator(gal.frame, unmasked)
        with torch.no_grad():
            samples = operator(torch.from_numpy(gal.samples).double()).numpy()
        images.append((samples.mean(axis=0), samples))  # the operator is linear
    return images


def _galaxy_rows(
    blend: str,
    method: str,
    truth_table: Table,
    true_images: np.ndarray,
    bands: Sequence[str],
    survey: str,
    matches: dict[int, tuple[np.ndarray, np.ndarray]],
    pixel_scale: float,
    variance: np.ndarray,
    aperture_arcsec: float = APERTURE_ARCSEC,
) -> list[dict]:
    """One row per (true galaxy, band); ``matches[k] = (sample images (S, C, H, W), estimate
    (C, H, W))`` in the survey frame; ``variance`` (C, H, W) is the data's, 0 where masked.

    Fluxes are the aperture flux at the true position (``flux``, ``true_flux``,
    ``flux_error``, ``inside_*``) and the sum over the cutout (``true_total_flux``,
    ``total_flux_error``, ``total_inside_*``); ``pixel_inside_*`` is the fraction of the
    aperture's true pixels inside the posterior intervals (:func:`pixel_scores`; NaN for a
    single sample or an unmatched galaxy). ``flux_noise`` is the noise of the same
    aperture on the data, ``sqrt(sum of the variance)``, as a fraction of the true flux: the
    error of plain aperture photometry of an isolated galaxy.
    Shapes are galsim.hsm adaptive moments of the estimated and the true image in each band,
    started at the true position.
    """
    from galdeblend.metrics import aperture_flux, shape_error, shape_moments

    radius = aperture_arcsec / pixel_scale
    rows = []
    for k, true_image in enumerate(true_images):
        xy = (float(truth_table[f"x_{survey}"][k]), float(truth_table[f"y_{survey}"][k]))
        true_flux = aperture_flux(true_image, xy, radius)
        noise = np.sqrt(aperture_flux(variance, xy, radius))
        true_total = true_image.sum(axis=(1, 2))
        found = k in matches
        if found:
            sample_images, estimate = matches[k]
            seed = zlib.crc32(f"{blend}/{k}".encode())
            sample_flux = np.stack([aperture_flux(image, xy, radius) for image in sample_images])
            error, inside = flux_scores(sample_flux, true_flux, seed=seed)
            total_error, total_inside = flux_scores(
                sample_images.sum(axis=(2, 3)), true_total, seed=seed
            )
            pixel_inside = pixel_scores(sample_images, true_image, xy, radius, seed=seed)
            mean_flux = sample_flux.mean(axis=0)
            psnr_c, ssim_c = _image_scores(estimate, true_image)
            true_shape = shape_moments(true_image, pixel_scale=pixel_scale, centroid=xy)
            shape = shape_error(
                shape_moments(estimate, pixel_scale=pixel_scale, centroid=xy), true_shape
            )
        for c, band in enumerate(bands):
            row = {
                "blend": blend,
                "method": method,
                "truth_id": int(truth_table["id"][k]),
                "band": band,
                "mag": float(truth_table[f"mag_{survey}_{band}"][k]),
                "true_flux": float(true_flux[c]),
                "true_total_flux": float(true_total[c]),
                "flux_noise": float(noise[c] / true_flux[c]),
                "matched": found,
                "flux": float(mean_flux[c]) if found else np.nan,
                "flux_error": float(error[c]) if found else np.nan,
                "total_flux_error": float(total_error[c]) if found else np.nan,
                "psnr": float(psnr_c[c]) if found else np.nan,
                "ssim": float(ssim_c[c]) if found else np.nan,
                "true_e1": float(true_shape.e1[c]) if found else np.nan,
                "true_e2": float(true_shape.e2[c]) if found else np.nan,
                "e1_error": float(shape.e1[c]) if found else np.nan,
                "e2_error": float(shape.e2[c]) if found else np.nan,
                "size_error": float(shape.size[c]) if found else np.nan,
            }
            for i, level in enumerate(LEVELS):
                row[f"inside_{level:g}"] = bool(inside[i, c]) if found else False
                row[f"total_inside_{level:g}"] = bool(total_inside[i, c]) if found else False
                row[f"pixel_inside_{level:g}"] = float(pixel_inside[i, c]) if found else np.nan
            rows.append(row)
    return rows


def score_blend(
    blend: str,
    result: DeblendResult,
    truth: SceneTruth,
    survey: str,
    *,
    match_radius_arcsec: float = 0.4,
    aperture_arcsec: float = APERTURE_ARCSEC,
    baselines: Sequence[str] = ("photutils", "sep", "scarlet2"),
) -> tuple[list[dict], list[dict], dict[str, list[np.ndarray]]]:
    """Score one blend's posterior and baselines against its truth.

    Parameters
    ----------
    blend : str
        Scene name (for the rows).
    result : DeblendResult
        The posterior; its first observation is the ``survey`` cutout.
    truth : SceneTruth
        The blend's truth (:func:`galdeblend.simulate.read_truth`).
    survey : str
        Survey of ``result.observations[0]``.
    match_radius_arcsec : float
        Largest distance of a match.
    aperture_arcsec : float
        Radius of the photometry aperture.
    baselines : sequence of {"photutils", "sep", "scarlet2"}

    Returns
    -------
    galaxy_rows : list of dict
        One row per method, true galaxy and band (see :func:`validate`).
    blend_rows : list of dict
        One row per method: ``completeness`` and ``chi2_per_pixel`` (galdeblend only).
    images : dict
        ``{method: list of matched galaxy images (C, H, W) in the survey frame}``.
    """
    from galdeblend.baselines.segmentation import match_sources, photutils_deblend, sep_deblend
    from galdeblend.metrics import chi2_per_pixel

    obs = result.observations[0]
    table = truth.galaxies
    true_images = truth.survey_galaxies[survey]
    true_xy = np.stack([np.asarray(table[f"x_{survey}"]), np.asarray(table[f"y_{survey}"])], 1)
    radius = match_radius_arcsec / obs.pixel_scale
    n_true = len(table)

    galaxies = result.galaxies
    gal_xy = np.array(
        [obs.wcs.world_to_pixel(g.center) for g in galaxies], dtype=np.float64
    ).reshape(-1, 2)
    rendered = render_galaxies(result, obs)
    found, true_index = match_sources(gal_xy, true_xy, radius)
    matches = {
        int(k): (rendered[i][1], rendered[i][0]) for i, k in zip(found, true_index, strict=True)
    }
    rows_of = partial(
        _galaxy_rows,
        blend,
        truth_table=table,
        true_images=true_images,
        bands=obs.bands,
        survey=survey,
        pixel_scale=obs.pixel_scale,
        variance=np.where(obs.mask, 0.0, np.broadcast_to(obs.variance, obs.shape)),
        aperture_arcsec=aperture_arcsec,
    )
    galaxy_rows = rows_of("galdeblend", matches=matches)
    chi2 = chi2_per_pixel(obs.data, result.models[0], obs.variance, obs.mask)
    blend_rows = [
        {
            "blend": blend,
            "method": "galdeblend",
            "completeness": len(matches) / n_true if n_true else np.nan,
            "chi2_per_pixel": chi2,
        }
    ]
    images = {"galdeblend": [m[1] for m in matches.values()]}

    # one photutils run serves its own row and scarlet2's starting positions
    photutils_result = cache(lambda: photutils_deblend(obs.data, obs.variance, mask=obs.mask))
    deblenders = {
        "photutils": photutils_result,
        "sep": lambda: sep_deblend(obs.data, obs.variance, mask=obs.mask),
        "scarlet2": lambda: _scarlet2_baseline(obs, photutils_result()),
    }
    for method in baselines:
        try:
            baseline = deblenders[method]()
        except ImportError as err:
            log.warning("validate: %s skipped (%s)", method, err)
            continue
        found, true_index = match_sources(baseline.positions, true_xy, radius)
        matches = {
            int(k): (baseline.sources[i][None], baseline.sources[i])
            for i, k in zip(found, true_index, strict=True)
        }
        galaxy_rows += rows_of(method, matches=matches)
        blend_rows.append(
            {
                "blend": blend,
                "method": method,
                "completeness": len(matches) / n_true if n_true else np.nan,
                "chi2_per_pixel": np.nan,
            }
        )
        images[method] = [m[1] for m in matches.values()]
    return galaxy_rows, blend_rows, images


def _scarlet2_baseline(obs: Observation, detected: BaselineResult) -> BaselineResult:
    """scarlet2 fitted to one cutout, one source per source of the photutils baseline
    ``detected`` (the segmentation baselines' detection image and threshold), with the
    cutout's PSF. ImportError without scarlet2."""
    from galdeblend.baselines.scarlet2_adapter import scarlet2_deblend

    if len(detected.positions) == 0:
        return dataclasses.replace(detected, method="scarlet2", segmentation=None)
    return scarlet2_deblend(obs.data, obs.variance, detected.positions, psf=obs.psf, mask=obs.mask)


def _band_planes(truth_bands: Sequence[str], prior_bands: Sequence[str]) -> list[int]:
    """Index in ``truth_bands`` (``SURVEY_BAND``) of each prior band, matched by band name.

    Prior band ``r`` is the first truth band named ``r`` or ``SURVEY_r``.
    """
    names = [b.split("_", 1)[-1] for b in truth_bands]
    missing = [b for b in prior_bands if b not in names]
    if missing:
        raise InputError(
            f"validate: prior band(s) {missing} have no true galaxy image; the truth's model "
            f"bands are {list(truth_bands)}"
        )
    return [names.index(b) for b in prior_bands]


def widen_psf(
    images: np.ndarray, fwhm: float, target_fwhm: float, pixel_scale: float
) -> np.ndarray:
    """Images ``(..., H, W)`` at a PSF of FWHM ``fwhm`` convolved with the Gaussian of FWHM
    ``sqrt(target_fwhm**2 - fwhm**2)`` (arcsec, pixels of ``pixel_scale`` arcsec) that
    takes a Gaussian PSF to ``target_fwhm``; returned unchanged where ``target_fwhm <= fwhm``.
    """
    from scipy.ndimage import gaussian_filter

    extra = np.sqrt(max(target_fwhm**2 - fwhm**2, 0.0))
    sigma = extra / (2.0 * np.sqrt(2.0 * np.log(2.0))) / pixel_scale
    if not sigma > 0:
        return images
    return gaussian_filter(images, (0,) * (images.ndim - 2) + (sigma, sigma), mode="constant")


def truth_stamps(truths: Sequence[SceneTruth], frame: PriorFrame) -> np.ndarray:
    """Every true galaxy in the prior frame centred on it, flux per prior pixel.

    Each galaxy's noiseless image on its truth's model grid (``SceneTruth.model``) is resampled
    (:class:`~galdeblend.operators.Resample`: flux-conserving, integrating over the prior
    pixels, any ratio of pixel scales) onto ``frame`` placed at the galaxy's position
    (``x_model``, ``y_model``), in the prior's band order (:func:`_band_planes`). Light outside
    the truth's model grid is missing from the stamp.

    The truth is drawn with a Gaussian PSF per band. Where it is narrower than the prior's
    ``psf_fwhm``, the image is first convolved with a Gaussian of FWHM
    ``sqrt(psf_fwhm**2 - fwhm_truth**2)`` (``fwhm_truth`` measured on ``model_psf``), so both
    share the prior's PSF. A broader truth PSF cannot be undone: those stamps stay blurrier
    than the prior's galaxies (a warning is logged), and PQMass then also sees the PSF
    difference.

    Parameters
    ----------
    truths : sequence of SceneTruth
    frame : PriorFrame
        The galaxy prior's frame, shape ``(C, H, W)``.

    Returns
    -------
    ndarray, shape (N, C, H, W)
        ``N`` the number of galaxies over all ``truths``.

    Raises
    ------
    InputError
        A prior band has no band of that name in a truth.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    from galdeblend.operators import Resample
    from galdeblend.operators.psf_matching import measure_fwhm

    _, H, W = frame.shape
    stamps, broader = [], []
    for truth in truths:
        planes = _band_planes(truth.model_bands, frame.bands)
        wcs = truth.model_wcs.celestial
        scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs))) * 3600.0)
        fwhm = np.array([measure_fwhm(truth.model_psf[i], scale) for i in planes])
        broader += [f for f in fwhm if f > 1.02 * frame.psf_fwhm]
        images = truth.model[:, planes]
        for c, f in enumerate(fwhm):  # each band's PSF widened to the prior's
            images[:, c] = widen_psf(images[:, c], f, frame.psf_fwhm, scale)
        table = truth.galaxies
        centers = wcs.pixel_to_world(np.asarray(table["x_model"]), np.asarray(table["y_model"]))
        for image, center in zip(images, centers, strict=True):
            resample = Resample(wcs, image.shape[-2:], frame.at(center).wcs, (H, W))
            stamps.append(resample(torch.from_numpy(image[None]))[0].numpy())
    if broader:
        log.warning(
            "validate: the true galaxies have a broader PSF (FWHM up to %.3g arcsec) than "
            "the prior frame (%.3g arcsec); PQMass also compares the PSFs",
            max(broader),
            frame.psf_fwhm,
        )
    return np.stack(stamps) if stamps else np.zeros((0, *frame.shape))


def _peak_normalize(images: np.ndarray) -> np.ndarray:
    """Images ``(..., H, W)`` divided by their largest pixel (unchanged where it is <= 0)."""
    peak = images.max(axis=(-2, -1), keepdims=True)
    return images / np.where(peak > 0, peak, 1.0)


def _shape_pqmass(samples: np.ndarray, truths: np.ndarray, *, seed: int = 0) -> PQMassResult:
    """PQMass between prior samples ``(M, C, H, W)`` and true stamps ``(N, C, H, W)``.

    Both are first normalized per image and band by their peak pixel
    (:func:`_peak_normalize`), so that shapes and colours are compared, not fluxes (the prior
    works in per-instance flux units). ``num_refs = max(2, min(100, (N + M) // 4, M - 3))``
    references, all drawn from the prior samples, so that a few true galaxies suffice
    (``N >= 3``, ``M >= 5``); 10 tessellations.

    Raises
    ------
    InputError
        Too few samples or galaxies, or a degenerate test: ``pqm`` fails when every sample
        falls into one Voronoi cell, as happens for noise-like prior samples (in many
        pixels, every point is nearest to the reference of smallest norm).
    """
    from galdeblend.metrics import pqmass

    m, n = len(samples), len(truths)
    num_refs = max(2, min(100, (n + m) // 4, m - 3))
    try:
        return pqmass(
            _peak_normalize(samples),
            _peak_normalize(truths),
            num_refs=num_refs,
            seed=seed,
            reference_fraction=1.0,
        )
    except ValueError as err:
        reason = " ".join(str(err).split())
        raise InputError(f"validate: PQMass of the prior failed ({reason})") from err


def _prior_pqmass(
    priors: Priors, truths: Sequence[SceneTruth], n_samples: int, *, seed: int = 0
) -> tuple[PQMassResult, int]:
    """PQMass of ``n_samples`` galaxy-prior samples against the true galaxies of ``truths``.

    Returns the result and the number of true galaxies. Raises ImportError without ``pqm``
    (before sampling) and InputError when the bands do not match, there are too few
    galaxies or the test is degenerate (:func:`truth_stamps`, :func:`_shape_pqmass`).
    """
    from importlib.util import find_spec

    from galdeblend.diffusion.samplers import sample_prior

    if find_spec("pqm") is None:
        raise ImportError("PQMass needs the pqm package: pip install 'galdeblend[bench]'")
    stamps = truth_stamps(truths, priors.galaxy_frame)
    samples = sample_prior(priors["galaxy"], n_samples, steps=PRIOR_STEPS, seed=seed)
    return _shape_pqmass(samples.double().cpu().numpy(), stamps, seed=seed), len(stamps)


def _posterior_for(scene: dict, resultsdir: Path) -> tuple[str, Path] | None:
    """The (survey, posterior file) of a manifest scene, the first survey with a posterior."""
    for survey, cutout in scene["cutouts"].items():
        path = resultsdir / f"{Path(cutout).stem}_posterior.fits"
        if path.is_file():
            return survey, path
    return None


def _summary_table(
    galaxies: Table, blends: Table, prior: tuple[PQMassResult, int] | None = None
) -> Table:
    """Method x metric: median, 16th and 84th percentile and count.

    With several methods, ``|flux_error| (found by all)`` and ``psnr (found by all)`` are
    restricted to the true galaxies that every method matched. ``ellipticity response`` is
    :func:`~galdeblend.metrics.ellipticity_response` over the matched galaxy-band pairs
    (``low`` and ``high``: plus or minus its standard error, the bands of a galaxy one group).

    ``prior`` (a PQMass result and the number of true galaxies) adds the galdeblend rows
    ``prior PQMass p-value`` (over the tessellations) and ``prior PQMass chi2``, the p-value
    percentiles mapped through the chi-square inverse survival function with the result's
    degrees of freedom (infinite where a p-value underflows to 0).
    """
    from galdeblend.metrics import ellipticity_response, pooled_fraction, summarize

    methods = list(dict.fromkeys(blends["method"]))
    matched = {m: galaxies[(galaxies["method"] == m) & galaxies["matched"]] for m in methods}
    found = {m: set(zip(gal["blend"], gal["truth_id"])) for m, gal in matched.items()}
    common = set.intersection(*found.values())
    rows = []
    for method, gal in matched.items():
        per_blend = blends[blends["method"] == method]
        in_common = np.array([g in common for g in zip(gal["blend"], gal["truth_id"])], bool)
        metrics: dict[str, np.ndarray] = {"|flux_error|": np.abs(np.asarray(gal["flux_error"]))}
        # In units of the aperture noise of the data: about 0.67 for unbiased photometry
        # that is as noisy as the data (the median of |z| for a standard normal z).
        metrics["|flux_error| / noise"] = metrics["|flux_error|"] / np.asarray(gal["flux_noise"])
        for band in dict.fromkeys(gal["band"]):
            metrics[f"|flux_error| {band}"] = np.abs(
                np.asarray(gal["flux_error"][gal["band"] == band])
            )
        metrics["|total flux_error|"] = np.abs(np.asarray(gal["total_flux_error"]))
        metrics["psnr"] = np.asarray(gal["psnr"])
        metrics["ssim"] = np.asarray(gal["ssim"])
        # |e| of the ellipticity error and |fractional size error|; failed hsm fits are NaN,
        # which summarize() leaves out.
        metrics["|e error|"] = np.hypot(gal["e1_error"], gal["e2_error"])
        metrics["|size error|"] = np.abs(np.asarray(gal["size_error"]))
        if len(methods) > 1:
            # The galaxies every method found, so that methods are compared on the same ones.
            metrics["|flux_error| (found by all)"] = metrics["|flux_error|"][in_common]
            metrics["|flux_error| / noise (found by all)"] = metrics["|flux_error| / noise"][
                in_common
            ]
            metrics["psnr (found by all)"] = metrics["psnr"][in_common]
        metrics["completeness"] = np.asarray(per_blend["completeness"])
        if method == "galdeblend":
            metrics["chi2_per_pixel"] = np.asarray(per_blend["chi2_per_pixel"])
        for name, values in metrics.items():
            s = summarize(values)
            rows.append((method, name, s.median, s.low, s.high, s.count))
        # 1 + m of the ellipticities; low/high: plus or minus its standard error, robust to
        # the bands of one galaxy sharing their errors.
        e_true = np.stack([np.asarray(gal["true_e1"]), np.asarray(gal["true_e2"])], axis=1)
        e_error = np.stack([np.asarray(gal["e1_error"]), np.asarray(gal["e2_error"])], axis=1)
        galaxy = [f"{b}/{t}" for b, t in zip(gal["blend"], gal["truth_id"], strict=True)]
        response, se, n = ellipticity_response(e_true + e_error, e_true, galaxy)
        rows.append((method, "ellipticity response", response, response - se, response + se, n))
        if method == "galdeblend":
            # Coverage is a pooled fraction; low/high give its standard error, the bands
            # of one galaxy one group (they miss the truth together).
            for column, name in (("inside", "coverage"), ("total_inside", "total coverage")):
                for level in (0.68, 0.95):
                    inside = np.asarray(gal[f"{column}_{level:g}"], dtype=float)
                    p, se, n = pooled_fraction(inside, galaxy)
                    rows.append((method, f"{name}_{level:g}", p, p - se, p + se, n))
            # The mean over galaxies of the fraction of their aperture pixels inside (all
            # bands); low/high: plus or minus its standard error over the galaxies, since
            # the bands of one galaxy are not independent.
            columns = [f"pixel_inside_{level:g}" for level in (0.68, 0.95)]
            scored = gal[np.isfinite(np.asarray(gal[columns[0]], dtype=float))]
            per_galaxy = scored[["blend", "truth_id", *columns]].group_by(["blend", "truth_id"])
            means = per_galaxy.groups.aggregate(np.mean)
            for level, column in zip((0.68, 0.95), columns, strict=True):
                fraction = np.asarray(means[column], dtype=float)
                n = fraction.size
                p = fraction.mean() if n else np.nan
                se = fraction.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
                rows.append((method, f"pixel coverage_{level:g}", p, p - se, p + se, n))
            if prior is not None:
                result, n_true = prior
                low, median, high = np.percentile(result.pvalue, [16.0, 50.0, 84.0])
                chi2 = chi2_distribution.isf([median, high, low], result.dof)
                rows.append((method, "prior PQMass chi2", *chi2, n_true))
                rows.append((method, "prior PQMass p-value", median, low, high, n_true))
    return Table(rows=rows, names=("method", "metric", "median", "low", "high", "count"))


def markdown_table(table: Table) -> str:
    """The :func:`validate` table as Markdown (median, 68% range and count per row)."""
    lines = [
        "| method | metric | median | 68% range | N |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['metric']} | {r['median']:.4g} | "
            f"[{r['low']:.4g}, {r['high']:.4g}] | {r['count']} |"
        )
    return "\n".join(lines) + "\n"


def _figures(
    outdir: Path,
    galaxies: Table,
    results: dict[str, DeblendResult],
    images: dict[str, dict[str, list[np.ndarray]]],
) -> None:
    """flux_error_vs_mag.png, calibration.png and blend_<name>.png per blend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matched = galaxies[galaxies["matched"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in dict.fromkeys(galaxies["method"]):
        rows = matched[matched["method"] == method]
        ax.scatter(rows["mag"], rows["flux_error"], s=8, label=method, alpha=0.7)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("true magnitude (AB)")
    ax.set_ylabel("fractional flux error")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / "flux_error_vs_mag.png", dpi=100)
    plt.close(fig)

    gal = matched[matched["method"] == "galdeblend"]
    empirical = [
        np.mean(np.asarray(gal[f"inside_{level:g}"])) if len(gal) else np.nan for level in LEVELS
    ]
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    total = [
        np.mean(np.asarray(gal[f"total_inside_{level:g}"])) if len(gal) else np.nan
        for level in LEVELS
    ]
    pixels = [
        np.nanmean(np.asarray(gal[f"pixel_inside_{level:g}"], dtype=float)) if len(gal) else np.nan
        for level in LEVELS
    ]
    ax.plot(LEVELS, empirical, "o-", label="galdeblend aperture flux")
    ax.plot(LEVELS, total, "s--", label="galdeblend total flux")
    ax.plot(LEVELS, pixels, "^:", label="galdeblend pixels in the aperture")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / "calibration.png", dpi=100)
    plt.close(fig)

    for blend, result in results.items():
        obs, model = result.observations[0], result.models[0]
        resid = np.where(obs.mask, 0.0, (obs.data - model) / np.sqrt(obs.variance))
        methods = images[blend]
        cols = max(3, max(len(v) for v in methods.values()))
        fig, axes = plt.subplots(
            1 + len(methods), cols, figsize=(1.7 * cols, 1.8 * (1 + len(methods))), squeeze=False
        )
        for ax in axes.ravel():
            ax.axis("off")
        panels = [
            (obs.data.sum(0), "data"),
            (model.sum(0), "galdeblend model"),
            (resid.sum(0) / np.sqrt(obs.shape[0]), "residual / sigma"),
        ]
        for j, (image, title) in enumerate(panels):
            limits = {"vmin": -5, "vmax": 5, "cmap": "RdBu_r"} if j == 2 else {"cmap": "gray_r"}
            axes[0, j].imshow(image, origin="lower", **limits)
            axes[0, j].set_title(title, fontsize=7)
        for i, (method, galaxy_images) in enumerate(methods.items(), start=1):
            for j, image in enumerate(galaxy_images):
                axes[i, j].imshow(image.sum(0), origin="lower", cmap="gray_r")
                axes[i, j].set_title(f"{method} {j}", fontsize=7)
        fig.tight_layout()
        fig.savefig(outdir / f"blend_{blend}.png", dpi=100)
        plt.close(fig)


def validate(
    simdir: str | Path,
    resultsdir: str | Path,
    *,
    outdir: str | Path | None = None,
    match_radius_arcsec: float = 0.4,
    aperture_arcsec: float = APERTURE_ARCSEC,
    baselines: Sequence[str] = ("photutils", "sep", "scarlet2"),
    priors: Priors | str | Path | None = None,
    prior_samples: int = 64,
) -> Table:
    """Score the posteriors of a simulated blend set and the baselines; write a report.

    Parameters
    ----------
    simdir : path
        Folder written by :func:`galdeblend.simulate.simulate_dataset` (with ``manifest.json``).
    resultsdir : path
        Folder written by ``galdeblend run`` on (some of) the simulated cutouts.
    outdir : path, optional
        Report folder (default ``resultsdir/validation``): ``table.csv``, ``table.md``,
        ``galaxies.csv`` (one row per method, blend, true galaxy and band), ``blends.csv``,
        ``flux_error_vs_mag.png``, ``calibration.png``, ``blend_<name>.png`` per blend and,
        with the prior test, ``prior_pqmass.json`` (settings and per-tessellation p-values).
    match_radius_arcsec : float
        Largest distance between a true galaxy and the source it is matched to.
    aperture_arcsec : float
        Radius of the circular photometry aperture at each true position.
    baselines : sequence of {"photutils", "sep", "scarlet2"}
        Baselines to run on the same cutouts: the photutils and SEP segmentations, and
        scarlet2 at the photutils detection's sources; one whose package is not installed
        is skipped with one warning.
    priors : Priors or path, optional
        Prior set whose galaxy prior is tested (default: the shipped priors).
    prior_samples : int
        Unconditional galaxy-prior samples (:data:`PRIOR_STEPS` predictor-corrector steps,
        seed 0) compared by PQMass with the true galaxies of the scored blends; 0 skips the
        test, otherwise at least 5. The true galaxies are brought into the prior's frame by
        :func:`truth_stamps` (resampled to its pixels, bands matched by name, PSF widened to
        the prior's where narrower), and samples and true galaxies alike are normalized per
        band by their peak pixel, since the prior works in per-instance flux units: the test
        compares shapes and colours, not fluxes. ``num_refs = max(2, min(100, (N + M) // 4,
        M - 3))`` references (``N`` true galaxies, ``M`` samples), drawn from the samples.
        Skipped with a warning when ``pqm`` is missing, or, for the default priors only,
        when their bands do not match the truth, there are fewer than 3 true galaxies or the
        test is degenerate (every sample in one Voronoi cell, as for noise-like prior
        samples); for given ``priors`` these raise, before any blend is scored. Few true
        galaxies give the test little power (a high p-value is then weak evidence).

    Returns
    -------
    astropy.table.Table
        Columns ``method``, ``metric``, ``median``, ``low``, ``high`` (16th and 84th
        percentiles; for ``coverage_*`` the pooled fraction plus or minus its standard
        error, the bands of a galaxy one group (:func:`~galdeblend.metrics.pooled_fraction`);
        for ``pixel coverage_*`` the mean over galaxies of the fraction of
        their aperture pixels inside (all bands), plus or minus its standard error over
        the galaxies; for ``prior PQMass p-value`` over the tessellations, and ``prior
        PQMass chi2`` the matching chi-square values with ``num_refs - 1`` degrees of
        freedom) and ``count`` (for the PQMass rows the number of true galaxies, for
        ``pixel coverage_*`` the number of galaxies).

    Raises
    ------
    InputError
        No manifest, no blend with a posterior in ``resultsdir``, a bad ``prior_samples``
        or, for given ``priors``, a failed prior test (see ``prior_samples``).
    """
    from galdeblend.io import read_posterior
    from galdeblend.simulate import read_truth

    simdir, resultsdir = Path(simdir), Path(resultsdir)
    manifest_path = simdir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"validate: {manifest_path} not found; SIMDIR must come from simulate")
    if not match_radius_arcsec > 0:
        raise InputError(f"validate: match_radius_arcsec must be > 0, got {match_radius_arcsec}")
    if not aperture_arcsec > 0:
        raise InputError(f"validate: aperture_arcsec must be > 0, got {aperture_arcsec}")
    if prior_samples < 0 or 0 < prior_samples < 5:
        raise InputError(f"validate: prior_samples must be 0 or >= 5, got {prior_samples}")
    prior_set = None
    if prior_samples:
        from galdeblend.priors import Priors

        prior_set = priors if isinstance(priors, Priors) else Priors.load(priors)
    missing = [m for m in baselines if importlib.util.find_spec(BASELINE_PACKAGES[m]) is None]
    for method in missing:
        log.warning("validate: %s skipped (not installed: pip install %s)", method, method)
    baselines = [method for method in baselines if method not in missing]
    manifest = json.loads(manifest_path.read_text())
    scenes = []
    for scene in manifest["scenes"]:
        found = _posterior_for(scene, resultsdir) if scene["kind"] == "blend" else None
        if found is not None:
            scenes.append((scene["name"], *found, read_truth(simdir / scene["truth"])))
    if not scenes:
        raise InputError(
            f"validate: no blend of {manifest_path} has a posterior (<stem>_posterior.fits) "
            f"in {resultsdir}"
        )
    # The prior test first: a problem with given priors stops before the scoring.
    prior = None
    if prior_set is not None:
        try:
            prior = _prior_pqmass(prior_set, [s[3] for s in scenes], prior_samples)
        except ImportError as err:
            log.warning("validate: prior PQMass skipped (%s)", err)
        except InputError as err:
            if priors is not None:
                raise
            log.warning("validate: prior PQMass of the default priors skipped (%s)", err)
    galaxy_rows: list[dict] = []
    blend_rows: list[dict] = []
    results: dict[str, DeblendResult] = {}
    images: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, survey, path, truth in scenes:
        result = read_posterior(path)
        g, b, im = score_blend(
            name,
            result,
            truth,
            survey,
            match_radius_arcsec=match_radius_arcsec,
            aperture_arcsec=aperture_arcsec,
            baselines=baselines,
        )
        galaxy_rows += g
        blend_rows += b
        results[name], images[name] = result, im
    galaxies, blends = Table(rows=galaxy_rows), Table(rows=blend_rows)
    table = _summary_table(galaxies, blends, prior)
    report = Path(outdir) if outdir is not None else resultsdir / "validation"
    report.mkdir(parents=True, exist_ok=True)
    if prior is not None:
        result, n_true = prior
        record = {
            "prior_samples": prior_samples,
            "steps": PRIOR_STEPS,
            "true_galaxies": n_true,
            "num_refs": result.dof + 1,
            "dof": result.dof,
            "pvalue": result.pvalue.tolist(),
        }
        (report / "prior_pqmass.json").write_text(json.dumps(record, indent=2))
    table.write(report / "table.csv", overwrite=True)
    galaxies.write(report / "galaxies.csv", overwrite=True)
    blends.write(report / "blends.csv", overwrite=True)
    (report / "table.md").write_text(markdown_table(table))
    _figures(report, galaxies, results, images)
    return table
