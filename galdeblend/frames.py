"""Frames: pixel grids with a WCS, bands and a PSF; the model frame and ``A_ib``.

A :class:`Frame` describes where a source instance lives (its *model frame*, DESIGN.md
section 1). :func:`model_frame` chooses one that can represent every observation:
the finest pixel scale, a Gaussian model PSF narrower than the sharpest observed PSF,
and a north-up TAN WCS. :func:`observation_operator` builds the linear map ``A_ib``
from a model frame to one observation.

Pixel-response convention: PSF images (observed and model) are effective PSFs that
include their own pixel; see :mod:`galdeblend.operators.psf_matching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import galsim
import numpy as np
import torch
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from galdeblend.errors import InputError
from galdeblend.io.observation import Observation
from galdeblend.operators.astro import Convolve, Resample, SelectBands, Shift
from galdeblend.operators.base import Compose, LinearOperator, Mask
from galdeblend.operators.psf_matching import difference_kernel, measure_fwhm, relative_jacobian

__all__ = ["Frame", "model_frame", "observation_operator", "sharpest_fwhm"]


@dataclass(frozen=True)
class Frame:
    """A pixel grid on the sky.

    Attributes
    ----------
    shape : (int, int, int)
        ``(C, H, W)``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the ``(H, W)`` grid.
    bands : tuple of str
        Band names, one per plane (``C`` of them).
    psf : ndarray, shape (C, h, w), or None
        Effective PSF per band at this frame's pixel scale (odd-sized, centred, sum 1).
    """

    shape: tuple[int, int, int]
    wcs: WCS
    bands: tuple[str, ...]
    psf: np.ndarray | None = None

    def __post_init__(self):
        if len(self.shape) != 3:
            raise InputError(f"Frame: shape must be (C, H, W), got {self.shape}")
        if len(self.bands) != self.shape[0]:
            raise InputError(f"Frame: {len(self.bands)} bands for {self.shape[0]} planes")
        if self.psf is not None and (np.ndim(self.psf) != 3 or len(self.psf) != self.shape[0]):
            raise InputError(
                f"Frame: psf must have shape (C, h, w) with C = {self.shape[0]}, "
                f"got {np.shape(self.psf)}"
            )

    @property
    def pixel_scale(self) -> float:
        """Geometric-mean pixel scale in arcsec."""
        return _pixel_scale(self.wcs)


def _pixel_scale(wcs: WCS) -> float:
    scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0
    return float(np.sqrt(scales[0] * scales[1]))


def gaussian_psf(fwhm: float, pixel_scale: float) -> np.ndarray:
    """A Gaussian model PSF drawn with its pixel, odd-sized (at least 8 FWHM), sum 1, ``(h, w)``."""
    side = max(int(np.ceil(8.0 * fwhm / pixel_scale)), 11)
    side += 1 - side % 2
    image = galsim.Gaussian(fwhm=fwhm).drawImage(galsim.ImageD(side, side, scale=pixel_scale))
    return image.array / image.array.sum()


def _tan_wcs(center: SkyCoord, pixel_scale: float, shape: tuple[int, int]) -> WCS:
    """North-up, east-left TAN WCS with ``center`` at the centre of an ``(H, W)`` grid."""
    icrs = center.icrs
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [icrs.ra.deg, icrs.dec.deg]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    wcs.wcs.cd = np.diag([-pixel_scale / 3600.0, pixel_scale / 3600.0])
    wcs.wcs.radesys = "ICRS"
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs


def _footprint(obs: Observation) -> SkyCoord:
    """Sky positions of the four outer corners of an observation."""
    _, H, W = obs.shape
    x = np.array([-0.5, W - 0.5, W - 0.5, -0.5])
    y = np.array([-0.5, -0.5, H - 0.5, H - 0.5])
    return obs.wcs.celestial.pixel_to_world(x, y)


def model_frame(
    observations: Sequence[Observation],
    *,
    center: SkyCoord | None = None,
    size_arcsec: float | None = None,
    pixel_scale: float | None = None,
    psf_fwhm: float | None = None,
) -> Frame:
    """The model frame for a set of observations of one area.

    Parameters
    ----------
    observations : sequence of Observation
        Each with a WCS and a PSF ``(C, h, w)``.
    center : SkyCoord, optional
        Centre of the frame; default: the centre of the first observation.
    size_arcsec : float, optional
        Side of the (square) frame; default: large enough to hold every
        observation's footprint around ``center``.
    pixel_scale : float, optional
        In arcsec; default: the finest pixel scale among the observations.
    psf_fwhm : float, optional
        FWHM in arcsec of the Gaussian model PSF; default: 0.8 times the FWHM of the
        sharpest observed PSF (any band), so every difference kernel exists.

    Returns
    -------
    Frame
        Bands: every observed band, in order of first appearance. The PSF is the
        Gaussian drawn with its pixel response at ``pixel_scale``, the same for all
        bands. The frame is square with an odd side and ``center`` on its central pixel.
    """
    observations = list(observations)
    if not observations:
        raise InputError("model_frame: observations is empty")
    for i, obs in enumerate(observations):
        if obs.wcs is None:
            raise InputError(f"model_frame: observation {i} ({obs.source}) has no WCS")
        if obs.psf is None:
            raise InputError(f"model_frame: observation {i} ({obs.source}) has no PSF")
    scale = pixel_scale if pixel_scale is not None else min(o.pixel_scale for o in observations)
    if scale <= 0:
        raise InputError(f"model_frame: pixel_scale must be > 0, got {scale}")
    if psf_fwhm is None:
        psf_fwhm = 0.8 * min(sharpest_fwhm(o) for o in observations)
    if psf_fwhm <= 0:
        raise InputError(f"model_frame: psf_fwhm must be > 0, got {psf_fwhm}")
    if center is None:
        _, H, W = observations[0].shape
        center = observations[0].wcs.celestial.pixel_to_world((W - 1) / 2.0, (H - 1) / 2.0)
    if size_arcsec is None:
        probe = _tan_wcs(center, 1.0, (1, 1))  # 1"/px, centre at pixel 0
        corners = [probe.world_to_pixel(_footprint(o)) for o in observations]
        size_arcsec = 2.0 * max(float(np.max(np.abs(np.concatenate(c)))) for c in corners)
    if size_arcsec <= 0:
        raise InputError(f"model_frame: size_arcsec must be > 0, got {size_arcsec}")
    side = int(np.ceil(size_arcsec / scale - 1e-6))
    side += 1 - side % 2
    bands: list[str] = []
    for obs in observations:
        bands.extend(b for b in obs.bands if b not in bands)
    psf = gaussian_psf(psf_fwhm, scale)
    return Frame(
        shape=(len(bands), side, side),
        wcs=_tan_wcs(center, scale, (side, side)),
        bands=tuple(bands),
        psf=np.repeat(psf[None], len(bands), axis=0),
    )


def sharpest_fwhm(obs: Observation | Frame) -> float:
    """Smallest PSF FWHM (arcsec) over the bands of an observation or frame."""
    scale = obs.pixel_scale
    return min(measure_fwhm(p, scale) for p in obs.psf)


def observation_operator(
    model: Frame,
    obs: Observation | Frame,
    *,
    shift: tuple[float, float] | None = None,
    kernel_flux_fraction: float = 1.0,
) -> LinearOperator:
    """``A_ib``: model-frame images ``(B, C_model, H, W)`` -> observation ``(B, C_obs, H', W')``.

    Applied in this order: :class:`Shift` by ``shift`` (model pixels, if given),
    :class:`SelectBands` (the observation's bands by name), :class:`Convolve` with the
    per-band difference kernel ``psf_obs (x) psf_model^-1`` at the model scale (the
    observation PSF turned into the model frame's orientation; the full convolution,
    so that light blurred beyond the frame's border still reaches the observation),
    :class:`Resample` to the observation grid (sampling at pixel centres, since the
    kernel already holds the observation's pixel response), and a :class:`Mask` that
    zeroes the observation's bad pixels.

    Parameters
    ----------
    model : Frame
        The model frame (with a PSF).
    obs : Observation or Frame
        The target, with a WCS, bands present in ``model`` and a PSF per band.
    shift : (float, float), optional
        ``(dx, dy)`` sub-pixel translation of the instance in model pixels.
    kernel_flux_fraction : float
        Crop each difference kernel to this fraction of its absolute sum
        (see :func:`~galdeblend.operators.psf_matching.difference_kernel`).
    """
    name = getattr(obs, "source", "frame")
    if model.psf is None:
        raise InputError("observation_operator: the model frame has no PSF")
    if obs.wcs is None or obs.psf is None:
        raise InputError(f"observation_operator: {name} needs a WCS and a PSF")
    missing = [b for b in obs.bands if b not in model.bands]
    if missing:
        raise InputError(
            f"observation_operator: band(s) {missing} of {name} are not in the model frame "
            f"bands {list(model.bands)}"
        )
    indices = [model.bands.index(b) for b in obs.bands]
    jacobian = relative_jacobian(obs.wcs, model.wcs)
    kernels = [
        difference_kernel(
            obs.psf[c],
            model.psf[i],
            pixel_scale_obs=obs.pixel_scale,
            pixel_scale_model=model.pixel_scale,
            obs_jacobian=jacobian,
            flux_fraction=kernel_flux_fraction,
        )
        for c, i in enumerate(indices)
    ]
    side = max(k.shape[0] for k in kernels)
    kernels = [np.pad(k, (side - k.shape[0]) // 2) for k in kernels]
    ops: list[LinearOperator] = []
    if isinstance(obs, Observation):
        ops.append(Mask(torch.from_numpy((~obs.mask).astype(np.float64))))
    # The full convolution keeps the light blurred beyond the model frame's border: its
    # grid is the model grid grown by the kernel's half-size on every side.
    half = side // 2
    grown = model.wcs.deepcopy()
    grown.wcs.crpix = grown.wcs.crpix + half
    grown_shape = (model.shape[1] + 2 * half, model.shape[2] + 2 * half)
    ops += [
        Resample(grown, grown_shape, obs.wcs, obs.shape[1:], pixel_response=False),
        Convolve(torch.from_numpy(np.stack(kernels)), full=True),
        SelectBands(indices, model.shape[0]),
    ]
    if shift is not None:
        ops.append(Shift(*shift))
    return Compose(ops)
