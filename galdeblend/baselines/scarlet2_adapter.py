"""scarlet2 (Melchior et al.) as a deblending baseline, when it is installed.

scarlet2 models every source as a spectrum times a non-parametric, positive morphology in a
model frame, seen through each observation's PSF, and fits all sources jointly to the data
by gradient descent (jax). Here one multi-band cutout is one scarlet2 observation; sources
start from Gaussian moments at given centres (a detection catalogue, e.g. from
:func:`~galdeblend.baselines.segmentation.photutils_deblend`), with a point-source start
where moments fail. The centres stay fixed during the fit.

scarlet2 and jax are optional: importing this module without them raises an ImportError
naming the package to install.
"""

from __future__ import annotations

import contextlib
import io
from functools import partial
from typing import Any

import numpy as np

from galdeblend.baselines.segmentation import BaselineResult, _validate_scene
from galdeblend.errors import InputError

try:
    import jax.numpy as jnp
    import scarlet2
    from numpyro.distributions import constraints
    from scarlet2 import init as scarlet2_init
    from scarlet2 import validation_utils
except ImportError as error:
    raise ImportError(
        "the scarlet2 baseline needs scarlet2 and jax: pip install scarlet2"
    ) from error

__all__ = ["scarlet2_deblend"]


def _validate_psf(psf: Any, n_bands: int) -> np.ndarray:
    """PSF images ``(C, h, w)``, one per band, each normalized to sum 1."""
    kernel = np.asarray(psf, dtype=np.float64)
    if kernel.ndim == 2:
        kernel = np.broadcast_to(kernel, (n_bands, *kernel.shape))
    if kernel.ndim != 3 or kernel.shape[0] != n_bands:
        raise InputError(
            f"psf: expected shape (h, w) or (C, h, w) with C = {n_bands}, got {kernel.shape}"
        )
    total = kernel.sum(axis=(1, 2), keepdims=True)
    if not np.all(total > 0):
        raise InputError("psf: every band's PSF image must have a positive sum")
    return kernel / total


def _crop_to(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """PSF images ``(C, h, w)`` cropped about their centre to at most the largest odd sizes
    within ``shape`` (scarlet2 pads the image by the PSF's size), renormalized to sum 1."""
    h, w = kernel.shape[-2:]
    odd = [n - 1 + n % 2 for n in shape]
    top, left = max(h - odd[0], 0) // 2, max(w - odd[1], 0) // 2
    cropped = kernel[:, top : h - top, left : w - left]
    return cropped / cropped.sum(axis=(1, 2), keepdims=True)


def scarlet2_deblend(
    image: Any,
    variance: Any,
    positions: Any,
    *,
    psf: Any,
    mask: Any | None = None,
    max_iter: int = 200,
    e_rel: float = 1e-4,
) -> BaselineResult:
    """Deblend a cutout with scarlet2, one source per given centre.

    Parameters
    ----------
    image : array, shape (C, H, W) or (H, W)
        The cutout (a 2-D image is one band).
    variance : array, broadcastable to (C, H, W)
        Noise variance, > 0 on unmasked pixels.
    positions : array, shape (N, 2)
        Source centres ``(x, y)`` in 0-based pixels.
    psf : array, shape (C, h, w) or (h, w)
        PSF image of each band at the cutout's pixel scale, centred (cropped to the cutout
        where larger).
    mask : array of bool, broadcastable to (C, H, W), optional
        True on bad pixels (given zero weight).
    max_iter : int
        Maximum number of optimizer steps.
    e_rel : float
        Relative parameter change at which the fit stops.

    Returns
    -------
    BaselineResult
        ``method="scarlet2"``; ``sources`` are each source's model rendered in the observed
        frame (through the PSF), ``flux`` their sums, ``positions`` the given centres,
        ``segmentation`` None.
    """
    data, var, bad = _validate_scene(image, variance, mask)
    centres = np.asarray(positions, dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2 or centres.shape[0] == 0:
        raise InputError(
            f"positions: expected shape (N, 2) of (x, y) with N >= 1, got {centres.shape}"
        )
    kernel = _crop_to(_validate_psf(psf, data.shape[0]), data.shape[-2:])
    weight = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, var))

    switch = validation_utils.VALIDATION_SWITCH
    # scarlet2 prints its checks' reports and notices (e.g. a negative initial spectrum):
    # kept off the user's output, the checks off during the fit and restored after
    with contextlib.redirect_stdout(io.StringIO()):
        validation_utils.set_validation(False)
        try:
            sources = _fit(data, weight, kernel, centres, max_iter=max_iter, e_rel=e_rel)
        finally:
            validation_utils.set_validation(switch)
    return BaselineResult(
        sources=sources,
        positions=centres.copy(),
        flux=sources.sum(axis=(-2, -1)),
        method="scarlet2",
    )


def _fit(
    data: np.ndarray,
    weight: np.ndarray,
    kernel: np.ndarray,
    centres: np.ndarray,
    *,
    max_iter: int,
    e_rel: float,
) -> np.ndarray:
    """scarlet2's fit of one source per centre; each source's model in the observed frame,
    ``(N, C, H, W)``."""
    observation = scarlet2.Observation(
        jnp.asarray(data),
        jnp.asarray(weight),
        psf=scarlet2.ArrayPSF(jnp.asarray(kernel)),
        channels=list(range(data.shape[0])),
    )
    frame = scarlet2.Frame.from_observations(observation)
    with scarlet2.Scene(frame) as scene:
        for x, y in centres:
            centre = jnp.array([y, x])  # scarlet2 pixel order is (y, x)
            try:
                spectrum, morphology = scarlet2_init.from_gaussian_moments(observation, centre)
            except ValueError:  # moments undefined (too faint or too compact)
                spectrum = scarlet2_init.pixel_spectrum(observation, centre)
                morphology = scarlet2_init.compact_morphology()
            # the positivity constraint needs a positive start: a faint source's noisy
            # spectrum can be negative in a band, which made its whole model NaN
            spectrum = jnp.maximum(spectrum, 1e-3 * jnp.max(jnp.abs(spectrum)) + 1e-12)
            scarlet2.Source(centre, spectrum, morphology)
    spectrum_step = partial(scarlet2.relative_step, factor=0.05)
    with scarlet2.Parameters(scene):
        for n, source in enumerate(scene.sources):
            scarlet2.Parameter(
                source.spectrum,
                name=f"spectrum:{n}",
                constraint=constraints.positive,
                stepsize=spectrum_step,
            )
            scarlet2.Parameter(
                source.morphology,
                name=f"morphology:{n}",
                constraint=constraints.positive,
                stepsize=0.1,
            )
    fitted = scene.fit(observation, max_iter=max_iter, e_rel=e_rel, progress_bar=False)
    return np.stack(
        [
            np.asarray(observation.render(fitted.evaluate_source(source)), dtype=np.float64)
            for source in fitted.sources
        ]
    )
