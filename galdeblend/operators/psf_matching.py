"""The PSF difference kernel between a model frame and an observation.

Pixel-response convention
-------------------------
PSF images delivered by surveys (and the ones galdeblend reads) are *effective* PSFs:
the optical PSF already convolved with the detector pixel and sampled at pixel centres
(what ``galsim`` draws with ``method='auto'``). Both PSF images are turned into
``galsim.InterpolatedImage`` profiles, so

    ``K = psf_obs_eff (x) psf_model_eff^-1``

contains the observation's pixel response and removes the model's. A model image whose
pixels are fluxes of ``scene (x) psf_model_eff`` becomes, after convolution with ``K``,
``scene (x) psf_obs_eff`` sampled on the model grid, i.e. already the value an
observation pixel centred there records. Resampling to the observation must then
*sample* (``Resample(..., pixel_response=False)``) rather than integrate over the
observation pixel again.
"""

from __future__ import annotations

import galsim
import numpy as np
from astropy.wcs import WCS

from galdeblend.errors import InputError

__all__ = ["difference_kernel", "relative_jacobian", "measure_fwhm"]


def _profile(psf: np.ndarray | galsim.GSObject, wcs: galsim.BaseWCS, name: str) -> galsim.GSObject:
    """A unit-flux galsim profile from a PSF image ``(h, w)`` on ``wcs`` (or a profile as is)."""
    if isinstance(psf, galsim.GSObject):
        return psf.withFlux(1.0)
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise InputError(
            f"difference_kernel: {name} must be an odd-sized 2-D image, got shape {psf.shape}"
        )
    total = psf.sum()
    if not np.isfinite(total) or total <= 0:
        raise InputError(f"difference_kernel: {name} must have a finite, positive sum, got {total}")
    return galsim.InterpolatedImage(galsim.ImageD(psf / total, wcs=wcs))


def difference_kernel(
    psf_obs: np.ndarray | galsim.GSObject,
    psf_model: np.ndarray | galsim.GSObject,
    *,
    pixel_scale_obs: float,
    pixel_scale_model: float,
    size: int | None = None,
    obs_jacobian: np.ndarray | None = None,
    flux_fraction: float = 1.0,
) -> np.ndarray:
    """The kernel ``K`` at the model pixel scale with ``psf_model (x) K = psf_obs``.

    ``K = galsim.Convolve(psf_obs, galsim.Deconvolve(psf_model))`` drawn at the model
    pixel scale with ``method='no_pixel'`` (the pixel responses are inside the PSF
    images, see the module docstring), then normalized to sum 1: galsim's FFT
    drawing cuts the kernel at the model PSF's maximum wavenumber, whose ringing tails
    outside the drawn stamp would otherwise change the flux by up to ~0.5%.

    Parameters
    ----------
    psf_obs : ndarray, shape (h, w), or galsim.GSObject
        Observation PSF image at ``pixel_scale_obs`` (odd-sized, centred), or a profile.
    psf_model : ndarray, shape (h', w'), or galsim.GSObject
        Model-frame PSF image at ``pixel_scale_model``, or a profile. It must be
        narrower than ``psf_obs``.
    pixel_scale_obs, pixel_scale_model : float
        Pixel scales in arcsec.
    size : int, optional
        Odd side of the kernel in model pixels; default: the extent of ``psf_obs``
        at the model scale (at least 3 FWHM of ``psf_obs``).
    obs_jacobian : ndarray, shape (2, 2), optional
        ``[[du/dx, du/dy], [dv/dx, dv/dy]]`` in arcsec per pixel, mapping pixel offsets
        ``(x, y)`` of the ``psf_obs`` image to offsets ``(u, v)`` along the model
        frame's pixel axes; it carries a rotation or flip between the two grids
        (see :func:`relative_jacobian`). Default: ``pixel_scale_obs`` times the identity
        (the two grids are aligned). Ignored when ``psf_obs`` is a profile.
    flux_fraction : float
        If below 1, crop the kernel to the smallest centred odd square holding this
        fraction of its absolute sum (the far wings of a survey PSF stamp cost FFT and
        resampling work for a negligible amount of light).

    Returns
    -------
    ndarray, shape (size, size)
        float64 kernel, centred on the central pixel, sum 1.
    """
    if pixel_scale_obs <= 0 or pixel_scale_model <= 0:
        raise InputError(
            "difference_kernel: pixel scales must be > 0, "
            f"got {pixel_scale_obs} and {pixel_scale_model}"
        )
    if obs_jacobian is None:
        obs_wcs = galsim.PixelScale(pixel_scale_obs)
    else:
        J = np.asarray(obs_jacobian, dtype=np.float64)
        if J.shape != (2, 2) or not np.isfinite(J).all() or abs(np.linalg.det(J)) == 0:
            raise InputError(
                f"difference_kernel: obs_jacobian must be an invertible 2x2 matrix, got {J!r}"
            )
        obs_wcs = galsim.JacobianWCS(J[0, 0], J[0, 1], J[1, 0], J[1, 1])
    obs = _profile(psf_obs, obs_wcs, "psf_obs")
    model = _profile(psf_model, galsim.PixelScale(pixel_scale_model), "psf_model")
    fwhm_obs = _fwhm(obs, pixel_scale_model)
    fwhm_model = _fwhm(model, pixel_scale_model)
    if fwhm_model >= fwhm_obs:
        raise InputError(
            f'difference_kernel: the model PSF (FWHM {fwhm_model:.3f}") must be narrower than '
            f'the observation PSF (FWHM {fwhm_obs:.3f}")'
        )
    if size is None:
        if isinstance(psf_obs, galsim.GSObject):
            extent = 6.0 * fwhm_obs
        else:
            extent = max(np.shape(psf_obs)) * pixel_scale_obs
        size = int(np.ceil(max(extent, 3.0 * fwhm_obs) / pixel_scale_model))
        size += 1 - size % 2
    elif size < 1 or size % 2 == 0:
        raise InputError(f"difference_kernel: size must be a positive odd integer, got {size}")
    kernel = galsim.Convolve(obs, galsim.Deconvolve(model))
    image = kernel.drawImage(galsim.ImageD(size, size, scale=pixel_scale_model), method="no_pixel")
    K = image.array.copy()
    if flux_fraction < 1.0:
        K = _crop_to_fraction(K, flux_fraction)
    return K / K.sum()


def _crop_to_fraction(K: np.ndarray, fraction: float) -> np.ndarray:
    """The smallest centred odd square of ``K`` holding ``fraction`` of ``sum |K|``."""
    c = K.shape[0] // 2
    total = np.abs(K).sum()
    for half in range(1, c + 1):
        box = K[c - half : c + half + 1, c - half : c + half + 1]
        if np.abs(box).sum() >= fraction * total:
            return box.copy()
    return K


def _fwhm(profile: galsim.GSObject, scale: float) -> float:
    """FWHM in arcsec of a profile, from the area above half its peak, drawn at ``scale / 4``.

    The area estimate does not depend on where the peak lies, so it is robust for
    PSF images centred a pixel off and for profiles only ~2 pixels wide.
    """
    fine = scale / 4.0
    image = profile.drawImage(scale=fine, method="no_pixel").array
    area = np.count_nonzero(image >= 0.5 * image.max()) * fine**2
    return float(2.0 * np.sqrt(area / np.pi))


def measure_fwhm(psf: np.ndarray, pixel_scale: float) -> float:
    """FWHM in arcsec of an effective PSF image ``(h, w)`` at ``pixel_scale`` (pixel included)."""
    return _fwhm(_profile(psf, galsim.PixelScale(pixel_scale), "psf"), pixel_scale)


def relative_jacobian(obs_wcs: WCS, model_wcs: WCS) -> np.ndarray:
    """Jacobian ``(2, 2)`` (arcsec per pixel) of an observation's pixels along the model axes.

    ``pixel_scale_model * M_model^-1 M_obs`` where ``M`` are the linear parts of the two
    celestial WCSs (``pixel_scale_matrix``, at their reference points): the argument
    ``obs_jacobian`` of :func:`difference_kernel`.
    """
    M_obs = obs_wcs.celestial.pixel_scale_matrix
    M_model = model_wcs.celestial.pixel_scale_matrix
    scale_model = np.sqrt(abs(np.linalg.det(M_model))) * 3600.0
    return scale_model * np.linalg.solve(M_model, M_obs)
