"""Segmentation deblending baselines: photutils and SEP (Source Extractor as a library).

Both run the same recipe on a multi-band cutout:

0. each band's residual background, a plane fitted with sigma clipping
   (:func:`galdeblend.background.plane_background`), is subtracted (``background=True``);
1. a detection image: the inverse-variance weighted sum of the bands (or one band),
   ``D = sum_c x_c / v_c / sqrt(sum_c 1 / v_c)``, which has unit noise, smoothed by a
   Gaussian matched filter and renormalized to unit noise again;
2. detection of the connected pixels above ``nsigma`` and multi-threshold deblending
   (photutils ``detect_sources`` + ``deblend_sources``, or ``sep.extract``);
3. every pixel of a segment is given to its source, in every band: the source image is the
   data inside the segment and zero outside, its flux per band the sum over the segment, and
   its position the centroid of the segment's bright core in the detection image.

:func:`match_sources` pairs detections with true positions, so the baselines can be scored
against simulated truth.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from photutils.segmentation import deblend_sources, detect_sources
from photutils.utils.exceptions import NoDetectionsWarning
from scipy.ndimage import convolve
from scipy.optimize import linear_sum_assignment

from galdeblend.background import plane_background
from galdeblend.errors import InputError

__all__ = ["BaselineResult", "photutils_deblend", "sep_deblend", "match_sources"]


@dataclass(frozen=True)
class BaselineResult:
    """Sources found by a baseline deblender (segmentation, or scarlet2).

    Attributes
    ----------
    sources : ndarray, shape (N, C, H, W)
        Source ``n``'s image in the observed frame (for segmentation: the data on its
        segment, zero elsewhere).
    positions : ndarray, shape (N, 2)
        Centres ``(x, y)`` in 0-based pixels (x along the last axis).
    flux : ndarray, shape (N, C)
        Flux of each source per band, the sum of its image.
    method : str
        ``"photutils"``, ``"sep"`` or ``"scarlet2"``.
    segmentation : ndarray of int, shape (H, W), or None
        0 on the background, ``n + 1`` on source ``n``'s segment; None for model-fitting
        methods.
    """

    sources: np.ndarray
    positions: np.ndarray
    flux: np.ndarray
    method: str
    segmentation: np.ndarray | None = None


def _validate_scene(
    image: Any, variance: Any, mask: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image, variance and bad-pixel mask as (C, H, W) arrays; masked pixels set to 0."""
    data = np.asarray(image, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"image: expected shape (H, W) or (C, H, W), got {data.shape}")
    try:
        var = np.broadcast_to(np.asarray(variance, dtype=np.float64), data.shape)
        bad = np.broadcast_to(np.asarray(False if mask is None else mask, bool), data.shape)
    except ValueError as error:
        raise InputError(
            f"variance and mask must broadcast to the image shape {data.shape}"
        ) from error
    bad = bad | ~np.isfinite(data)
    if not np.all(var[~bad] > 0):
        raise InputError("variance must be finite and > 0 on every unmasked pixel")
    return np.where(bad, 0.0, data), var, bad


def _subtract_background(data: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``data`` (C, H, W) less each band's plane background; masked pixels stay 0."""
    planes = np.stack([plane_background(d, mask=b) for d, b in zip(data, bad)])
    return np.where(bad, 0.0, data - planes)


def _gaussian_kernel(fwhm: float) -> np.ndarray:
    """Normalized (sum 1) circular Gaussian of the given FWHM in pixels, odd-sized."""
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    half = max(1, int(np.ceil(3.0 * sigma)))
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.exp(-(x**2 + y**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def _detection_image(
    data: np.ndarray, variance: np.ndarray, bad: np.ndarray, *, detection_band: int | None
) -> np.ndarray:
    """Unit-noise detection image ``(H, W)``: the inverse-variance weighted band sum."""
    if detection_band is not None:
        if not -data.shape[0] <= detection_band < data.shape[0]:
            raise InputError(
                f"detection_band={detection_band} is out of range for {data.shape[0]} band(s)"
            )
        keep = np.zeros(data.shape[0], bool)
        keep[detection_band] = True
        bad = bad | ~keep[:, None, None]
    weight = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, variance))
    total = weight.sum(axis=0)
    return np.where(total > 0, (weight * data).sum(axis=0) / np.sqrt(np.maximum(total, 1e-300)), 0)


def _matched_filter(snr: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    """``snr`` (unit noise) convolved with ``kernel`` and rescaled to unit noise again."""
    if kernel is None:
        return snr
    return convolve(snr, kernel, mode="constant") / np.sqrt(np.sum(kernel**2))


def _result_from_segmentation(
    data: np.ndarray, detection: np.ndarray, segmentation: np.ndarray, method: str
) -> BaselineResult:
    """Per-source images, fluxes and core centroids from a label map (labels 1..N)."""
    labels = np.unique(segmentation[segmentation > 0])
    relabelled = np.zeros(segmentation.shape, dtype=np.int64)
    sources, positions = [], []
    y, x = np.indices(segmentation.shape)
    for index, label in enumerate(labels):
        inside = segmentation == label
        relabelled[inside] = index + 1
        sources.append(data * inside)
        core = np.clip(detection - 0.5 * detection[inside].max(), 0.0, None) * inside
        if not core.sum() > 0:  # a flat segment: plain centroid
            core = inside.astype(np.float64)
        positions.append([np.sum(core * x) / core.sum(), np.sum(core * y) / core.sum()])
    n_bands, height, width = data.shape
    stack = np.array(sources).reshape(len(labels), n_bands, height, width)
    return BaselineResult(
        sources=stack,
        positions=np.array(positions, dtype=np.float64).reshape(len(labels), 2),
        flux=stack.sum(axis=(-2, -1)),
        method=method,
        segmentation=relabelled,
    )


def photutils_deblend(
    image: Any,
    variance: Any,
    *,
    mask: Any | None = None,
    detection_band: int | None = None,
    nsigma: float = 3.0,
    npixels: int = 5,
    nlevels: int = 32,
    contrast: float = 0.001,
    kernel_fwhm: float | None = 2.0,
    background: bool = True,
) -> BaselineResult:
    """Deblend by segmentation with photutils (``detect_sources`` + ``deblend_sources``).

    Parameters
    ----------
    image : array, shape (C, H, W) or (H, W)
        The cutout (a 2-D image is one band).
    variance : array, broadcastable to (C, H, W)
        Noise variance, > 0 on unmasked pixels.
    mask : array of bool, broadcastable to (C, H, W), optional
        True on bad pixels, which are ignored.
    detection_band : int, optional
        Detect on this band only. Default: the inverse-variance weighted sum of all bands.
    nsigma : float
        Detection threshold in units of the (unit) noise of the filtered detection image.
    npixels : int
        Minimum number of connected pixels of a source.
    nlevels : int
        Number of multi-threshold levels of the deblending.
    contrast : float
        Fraction of a segment's flux a component needs to be deblended as a separate source.
    kernel_fwhm : float or None
        FWHM in pixels of the Gaussian matched filter applied to the detection image; None
        for no filtering.
    background : bool
        Subtract each band's residual background (a sigma-clipped plane) first.

    Returns
    -------
    BaselineResult
        With ``method="photutils"``; no sources gives ``N = 0``.
    """

    data, var, bad = _validate_scene(image, variance, mask)
    if background:
        data = _subtract_background(data, bad)
    kernel = None if kernel_fwhm is None else _gaussian_kernel(kernel_fwhm)
    detection = _matched_filter(
        _detection_image(data, var, bad, detection_band=detection_band), kernel
    )
    with warnings.catch_warnings():  # an empty field is a valid outcome: N = 0
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = detect_sources(detection, nsigma, npixels, mask=bad.all(axis=0))
    if segments is None:
        labels = np.zeros(detection.shape, dtype=np.int64)
    else:
        labels = deblend_sources(
            detection,
            segments,
            npixels,
            n_levels=nlevels,
            contrast=contrast,
            progress_bar=False,
        ).data
    return _result_from_segmentation(data, detection, labels, "photutils")


def sep_deblend(
    image: Any,
    variance: Any,
    *,
    mask: Any | None = None,
    detection_band: int | None = None,
    nsigma: float = 3.0,
    npixels: int = 5,
    nlevels: int = 32,
    contrast: float = 0.001,
    kernel_fwhm: float | None = 2.0,
    background: bool = True,
) -> BaselineResult:
    """Deblend by segmentation with SEP (``sep.extract`` with its segmentation map).

    The detection image is built as in :func:`photutils_deblend` before filtering; SEP
    applies the Gaussian matched filter itself (with unit noise given, its threshold is in
    units of the filtered noise, as for photutils). Parameters and result as in
    :func:`photutils_deblend`, with ``method="sep"``.

    Raises
    ------
    ImportError
        If ``sep`` is missing (install the ``bench`` extra: ``pip install galdeblend[bench]``).
    """
    try:
        import sep
    except ImportError as error:
        raise ImportError(
            "sep_deblend needs the sep package: pip install 'galdeblend[bench]' (or sep)"
        ) from error

    data, var, bad = _validate_scene(image, variance, mask)
    if background:
        data = _subtract_background(data, bad)
    snr = _detection_image(data, var, bad, detection_band=detection_band)
    kernel = None if kernel_fwhm is None else _gaussian_kernel(kernel_fwhm)
    all_bad = np.ascontiguousarray(bad.all(axis=0))
    _, labels = sep.extract(
        np.ascontiguousarray(snr),
        nsigma,
        err=np.ones_like(snr),
        mask=all_bad,
        minarea=npixels,
        filter_kernel=kernel,
        deblend_nthresh=nlevels,
        deblend_cont=contrast,
        segmentation_map=True,
    )
    return _result_from_segmentation(data, _matched_filter(snr, kernel), np.asarray(labels), "sep")


def match_sources(
    detected_xy: Any, true_xy: Any, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pair detections with true sources (Hungarian assignment, minimum total distance).

    Parameters
    ----------
    detected_xy : array, shape (N, 2)
        Detected positions ``(x, y)``.
    true_xy : array, shape (M, 2)
        True positions ``(x, y)``, same units.
    max_distance : float
        Pairs farther apart than this are not matched.

    Returns
    -------
    detected_index, true_index : ndarray of int, shape (K,)
        ``detected_xy[detected_index[k]]`` is matched to ``true_xy[true_index[k]]``, sorted by
        ``true_index``; unmatched sources appear in neither.
    """
    detected = np.asarray(detected_xy, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    if not max_distance > 0:
        raise InputError(f"max_distance must be > 0, got {max_distance}")
    distance = np.linalg.norm(detected[:, None, :] - truth[None, :, :], axis=-1)
    # Pairs beyond max_distance cost more than any set of allowed pairs, so they are used
    # only when nothing else is left, and are dropped afterwards.
    cost = np.where(distance <= max_distance, distance, max_distance * (1 + distance.size))
    rows, columns = linear_sum_assignment(cost)
    keep = distance[rows, columns] <= max_distance
    order = np.argsort(columns[keep])
    return rows[keep][order], columns[keep][order]
