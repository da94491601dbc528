"""Decoding named mask bits into boolean bad-pixel masks.

Two kinds of named bit masks are understood:

* LSST/HSC afw ``MASK`` planes, whose bit numbers are declared in the header as
  ``MP_<NAME> = <bit>`` keywords (the set of planes differs between releases, so the names,
  not the bit numbers, decide what is bad);
* Legacy Surveys ``MASKBITS`` images, whose bit numbers are fixed by the survey and some of
  whose bits concern one band only (``SATUR_G``, ``ALLMASK_R``, ...).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
from astropy.io.fits import Header

__all__ = [
    "AFW_DEFAULT_BAD",
    "LEGACY_MASKBITS",
    "LEGACY_DEFAULT_BAD",
    "afw_planes",
    "planes_to_mask",
    "legacy_bad_pixels",
]

AFW_DEFAULT_BAD: frozenset[str] = frozenset(
    {"BAD", "SAT", "INTRP", "CR", "EDGE", "NO_DATA", "SUSPECT", "UNMASKEDNAN", "CLIPPED"}
)
"""afw mask planes treated as bad by default.

Pixels flagged by detection or measurement planes (``DETECTED``, ``DETECTED_NEGATIVE``,
``INEXACT_PSF``, ``STREAK``, ...) are *not* bad: ``DETECTED`` covers most source pixels.
"""

LEGACY_MASKBITS: Mapping[str, int] = {
    "NPRIMARY": 0,
    "BRIGHT": 1,
    "SATUR_G": 2,
    "SATUR_R": 3,
    "SATUR_Z": 4,
    "ALLMASK_G": 5,
    "ALLMASK_R": 6,
    "ALLMASK_Z": 7,
    "WISEM1": 8,
    "WISEM2": 9,
    "BAILOUT": 10,
    "MEDIUM": 11,
    "GALAXY": 12,
    "CLUSTER": 13,
    "SATUR_I": 14,
    "ALLMASK_I": 15,
    "SUB_BLOB": 16,
}
"""Bit numbers of the Legacy Surveys (DR9/DR10) ``MASKBITS`` image."""

LEGACY_DEFAULT_BAD: frozenset[str] = frozenset({"SATUR", "ALLMASK"})
"""Legacy Surveys bits treated as bad by default, as per-band prefixes.

``SATUR`` masks band b where ``SATUR_<B>`` is set, ``ALLMASK`` where ``ALLMASK_<B>`` is set.
Proximity bits (``BRIGHT``, ``MEDIUM``, ``GALAXY``, ``CLUSTER``) and ``NPRIMARY`` describe the
neighbourhood, not the pixel, and are not bad.
"""


def afw_planes(header: Header) -> dict[str, int]:
    """Mask plane names and bit numbers declared by ``MP_<NAME>`` keywords.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of an afw ``MASK`` HDU.

    Returns
    -------
    dict
        ``{plane name: bit number}``.
    """
    return {key[3:]: int(value) for key, value in header.items() if key.startswith("MP_")}


def planes_to_mask(
    bits: np.ndarray, planes: Mapping[str, int], names: Collection[str]
) -> np.ndarray:
    """Pixels where any of the named planes is set.

    Parameters
    ----------
    bits : ndarray of int, any shape
        Integer bit mask.
    planes : mapping
        ``{plane name: bit number}``.
    names : collection of str
        Planes that make a pixel bad. Names that ``planes`` does not declare are ignored, so
        that one set of names serves files that declare different planes.

    Returns
    -------
    ndarray of bool, same shape as ``bits``
        True where a pixel is bad.
    """
    selected = 0
    for name in names:
        if name in planes:
            selected |= 1 << planes[name]
    return (np.asarray(bits).astype(np.int64) & selected) != 0


def legacy_bad_pixels(
    maskbits: np.ndarray, bands: Sequence[str], names: Collection[str] | None = None
) -> np.ndarray:
    """Bad pixels of each band from a Legacy Surveys ``MASKBITS`` image.

    Parameters
    ----------
    maskbits : ndarray of int, shape (H, W) or (C, H, W)
        The ``MASKBITS`` image (one plane shared by all bands, or one per band).
    bands : sequence of str, length C
        Band of each image plane.
    names : collection of str, optional
        Bad bits: full names from :data:`LEGACY_MASKBITS` (``"SATUR_R"``, ``"BAILOUT"``),
        which mask every band, or per-band prefixes (``"SATUR"``, ``"ALLMASK"``), which mask
        each band where its own bit (``SATUR_G`` for band g, ...) is set.
        Defaults to :data:`LEGACY_DEFAULT_BAD`.

    Returns
    -------
    ndarray of bool, shape (C, H, W)
        True where a pixel is bad.
    """
    names = LEGACY_DEFAULT_BAD if names is None else names
    bits = np.asarray(maskbits)
    planes = bits if bits.ndim == 3 else np.broadcast_to(bits, (len(bands), *bits.shape))
    bad = np.zeros(planes.shape, dtype=bool)
    for c, band in enumerate(bands):
        band_names = {f"{name}_{band.upper()}" for name in names} | set(names)
        bad[c] = planes_to_mask(planes[c], LEGACY_MASKBITS, band_names)
    return bad
