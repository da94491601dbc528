"""The :class:`Observation`: one cutout with its noise, mask, PSF and WCS."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = ["Observation"]


@dataclass
class Observation:
    """A cutout ready for deblending.

    Attributes
    ----------
    data : ndarray, shape (C, H, W)
        Pixel values (float64), one plane per band. Masked pixels are set to 0.
    variance : ndarray, shape (C, H, W)
        Per-pixel noise variance (float64), finite and > 0 where not masked.
    mask : ndarray of bool, shape (C, H, W)
        True where a pixel is bad and must be ignored.
    psf : ndarray, shape (C, h, w) or None
        PSF image per band at the cutout's pixel scale, odd-sized, centred on the
        central pixel and normalized to sum 1.
    wcs : astropy.wcs.WCS or None
        Celestial (2-D) WCS of the pixel grid.
    bands : tuple of str
        Band names, one per plane.
    source : str
        Where the cutout came from (file path, or a description of the object).
    hdu : str, int or None
        The HDU the pixels came from.
    meta : dict
        Anything else worth keeping (header cards, survey, units).
    """

    data: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    psf: np.ndarray | None = None
    wcs: WCS | None = None
    bands: tuple[str, ...] = ()
    source: str = "<array>"
    hdu: str | int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.data.shape)

    @property
    def pixel_scale(self) -> float:
        """Geometric-mean pixel scale in arcsec (needs a WCS)."""
        if self.wcs is None:
            raise ValueError(f"{self.source}: no WCS, so no pixel scale")
        scales = proj_plane_pixel_scales(self.wcs.celestial) * 3600.0
        return float(np.sqrt(scales[0] * scales[1]))

    @property
    def weight(self) -> np.ndarray:
        """Inverse variance, 0 where masked, ``(C, H, W)``."""
        w = np.zeros_like(self.variance)
        good = ~self.mask
        w[good] = 1.0 / self.variance[good]
        return w
