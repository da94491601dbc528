"""Degrade a sharp observation to the resolution, PSF and pixel grid of a broader one."""

from __future__ import annotations

import numpy as np
import torch
from astropy.nddata import NDData

from galdeblend.errors import InputError
from galdeblend.io.observation import Observation
from galdeblend.operators.astro import Convolve, Resample
from galdeblend.operators.psf_matching import difference_kernel, relative_jacobian

__all__ = ["degrade"]


def _plane(obs: Observation, band: str | None, role: str) -> int:
    """Index of ``band`` in ``obs``; its only plane when ``band`` is None or absent there."""
    if band is not None and band in obs.bands:
        return obs.bands.index(band)
    if obs.shape[0] == 1:
        return 0
    raise InputError(
        f"degrade: {role} observation {obs.source} has bands {list(obs.bands)}; "
        f"pass band= one of them (got {band!r})"
    )


def degrade(sharp: Observation, target: Observation, *, band: str | None = None) -> NDData:
    """What ``target``'s instrument would record of the scene in ``sharp``.

    The sharp image is convolved with the difference kernel ``psf_target (x)
    psf_sharp^-1`` at the sharp pixel scale, then resampled (flux conserving, sampling
    at pixel centres since the kernel holds the target's pixel response) onto the
    target's WCS grid. Masked sharp pixels count as 0.

    Parameters
    ----------
    sharp : Observation
        The sharper observation (smaller PSF), with WCS and PSF.
    target : Observation
        The broader observation whose frame, PSF and pixel are imitated.
    band : str, optional
        Target band to imitate; needed when ``target`` has several bands. The sharp
        plane of the same name is used, or the sharp image's only plane.

    Returns
    -------
    NDData
        ``data`` (H, W) on the target grid, in the sharp image's flux units; ``wcs``
        the target's celestial WCS; ``mask`` True where the target pixel centre lies
        outside the sharp image; ``meta`` with ``band``, ``sharp_source``,
        ``target_source`` and the difference-kernel side ``kernel_size``.
    """
    for role, obs in (("sharp", sharp), ("target", target)):
        if obs.wcs is None or obs.psf is None:
            raise InputError(f"degrade: {role} observation {obs.source} needs a WCS and a PSF")
    t = _plane(target, band, "target")
    s = _plane(sharp, target.bands[t] if target.bands else band, "sharp")
    K = difference_kernel(
        target.psf[t],
        sharp.psf[s],
        pixel_scale_obs=target.pixel_scale,
        pixel_scale_model=sharp.pixel_scale,
        obs_jacobian=relative_jacobian(target.wcs, sharp.wcs),
    )
    image = np.where(sharp.mask[s], 0.0, sharp.data[s]).astype(np.float64)
    x = torch.from_numpy(image)[None, None]
    resample = Resample(sharp.wcs, image.shape, target.wcs, target.shape[1:], pixel_response=False)
    y = resample(Convolve(torch.from_numpy(K))(x))[0, 0].numpy()
    H, W = target.shape[1:]
    yy, xx = np.mgrid[0:H, 0:W]
    sky = target.wcs.celestial.pixel_to_world(xx.ravel(), yy.ravel())
    xs, ys = sharp.wcs.celestial.world_to_pixel(sky)
    Hs, Ws = image.shape
    outside = (xs < -0.5) | (xs > Ws - 0.5) | (ys < -0.5) | (ys > Hs - 0.5)
    name = target.bands[t] if target.bands else band
    return NDData(
        y,
        wcs=target.wcs.celestial,
        mask=outside.reshape(H, W),
        meta={
            "band": name,
            "sharp_source": sharp.source,
            "target_source": target.source,
            "kernel_size": K.shape[0],
        },
    )
