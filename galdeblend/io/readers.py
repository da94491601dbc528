"""Reading survey cutouts into :class:`~galdeblend.io.observation.Observation` objects.

:func:`read_cutouts` takes FITS files, HDU lists, HDUs, astropy NDData/CCDData or
``(array, WCS)`` pairs, recognizes the FITS layout of several surveys, and returns cleaned
observations (data, variance, mask, PSF, celestial WCS, band names). :func:`stack_bands`
joins single-band observations of one pixel grid into one multi-band observation.

FITS conventions (detected from the extension names and keywords)
-----------------------------------------------------------------
``afw``
    LSST/HSC afw exposure: ``IMAGE``, ``MASK`` (bit planes named by ``MP_<NAME>`` keywords,
    decoded by name, see :data:`~galdeblend.io.masks.AFW_DEFAULT_BAD`), ``VARIANCE``. Band
    from ``BAND`` or ``FILTER``. The PSF is a separate file (see "PSF" below); afw's own
    archive PSF tables are not read.
``hst_drz``
    HST drizzled: ``SCI``, ``WHT`` (inverse variance; 0 = no data, masked), optional ``CTX``.
``hst_flt``
    HST flt/flc: ``SCI``, ``ERR`` (variance ``ERR**2``), ``DQ`` (``DQ != 0`` is bad). One
    observation per ``SCI`` extension version (chip).
``jwst_i2d``
    JWST i2d: ``SCI``, ``ERR``, ``WHT`` (0 = no data, masked) and ``VAR_POISSON``,
    ``VAR_RNOISE``, ``VAR_FLAT`` (variance = the sum of those present, else ``ERR**2``).
    Recognized by a ``VAR_*`` extension or ``TELESCOP = 'JWST'``.
``legacy``
    Legacy Surveys cutout: a cube ``(band, y, x)`` in the PRIMARY HDU with ``BANDS`` (e.g.
    ``'grz'``) or ``BAND0``... keywords, and HDUs whose ``IMAGETYP`` is ``INVVAR`` (inverse
    variance; 0 = no data, masked) and ``MASKBITS`` (see
    :func:`~galdeblend.io.masks.legacy_bad_pixels`).
``plain``
    Anything else: the first 2-D or 3-D image HDU. Noise, mask and PSF come from the
    options; without any variance a constant per-band variance is estimated from the image
    (sigma-clipped MAD), with a :class:`~galdeblend.errors.DataWarning`.

Bands
-----
``band=`` wins; otherwise ``BAND0``..., ``BANDS``, or for one plane ``BAND``, ``FILTER`` or
the non-``CLEAR`` one of ``FILTER1``/``FILTER2`` (image header first, then PRIMARY);
otherwise ``"band0"``, ``"band1"``, ...

PSF
---
In order of precedence: the ``psf=`` option; an image HDU named ``PSF`` in the file; for a
file ``NAME.fits``, the file named by its ``PSFFILE`` keyword, then ``NAME_psf.fits``,
``NAME.psf.fits`` or ``NAME.psf`` (PSF image or PSFEx model) beside it. PSFEx models are
evaluated at the cutout centre (in the parent image's pixels, using the ``LTV1``/``LTV2``
offsets of the image header). No PSF at all gives ``psf=None``. Every PSF is checked and
normalized (:func:`galdeblend.io.psf._validate_psf`).

Cleaning
--------
Pixels with non-finite data, or variance <= 0 or non-finite, that no mask flags already
are masked with a DataWarning that counts them. Masked pixels carry data 0 and the band's
median unmasked variance (so no NaN or inf reaches later code); ignore them through
``mask`` or :attr:`Observation.weight`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.nddata import InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from galdeblend.errors import DataWarning, GaldeblendWarning, InputError
from galdeblend.io.masks import AFW_DEFAULT_BAD, afw_planes, legacy_bad_pixels, planes_to_mask
from galdeblend.io.observation import Observation
from galdeblend.io.psf import PsfSpec, load_psf, stack_psfs

__all__ = ["read_cutouts", "stack_bands", "CutoutInput", "PlaneSpec"]

CutoutInput = str | os.PathLike | fits.HDUList | fits.ImageHDU | fits.PrimaryHDU | NDData | tuple
"""One cutout: a FITS path, an HDUList, an image HDU, an NDData/CCDData, or (array, WCS)."""

PlaneSpec = str | os.PathLike | np.ndarray | float
"""A variance, weight or mask option: a FITS path, an array, or a scalar value."""

_ACCEPTED = (
    "a FITS path (str or os.PathLike), an astropy HDUList, ImageHDU, PrimaryHDU or "
    "CompImageHDU, an astropy NDData/CCDData, an (array, WCS) tuple, or a list of those"
)
_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
_MIN_PIXELS_FOR_NOISE = 10


@dataclass(frozen=True)
class _Options:
    """The per-call options of :func:`read_cutouts`."""

    psf: PsfSpec | None
    variance: PlaneSpec | None
    weight: PlaneSpec | None
    mask: PlaneSpec | None
    band: str | Sequence[str] | None
    require_wcs: bool
    bad_mask_bits: Collection[str] | None


@dataclass
class _Cutout:
    """What a convention reader extracts from one input, before the common cleaning.

    ``data``, ``variance`` and ``mask`` have shape (C, H, W); ``mask`` holds the pixels the
    convention itself flags (bad bits, zero weight).
    """

    data: np.ndarray
    variance: np.ndarray | None
    mask: np.ndarray
    wcs: WCS | None
    bands: tuple[str, ...]
    hdu: str | int | None
    convention: str
    variance_source: str
    header: Mapping = field(default_factory=fits.Header)
    primary: Mapping = field(default_factory=fits.Header)
    psf: PsfSpec | None = None


def read_cutouts(
    inputs: CutoutInput | Sequence[CutoutInput],
    *,
    psf: PsfSpec | None = None,
    variance: PlaneSpec | None = None,
    weight: PlaneSpec | None = None,
    mask: PlaneSpec | None = None,
    band: str | Sequence[str] | None = None,
    require_wcs: bool = True,
    bad_mask_bits: Collection[str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    failures: list[tuple[str, InputError]] | None = None,
) -> list[Observation]:
    """Read survey cutouts into observations.

    The FITS layout (LSST/HSC afw, HST drizzled or flt/flc, JWST i2d, Legacy Surveys, plain
    image) is recognized automatically; see the module docstring for each convention and
    for the band, PSF and cleaning rules.

    Parameters
    ----------
    inputs : path, HDUList, HDU, NDData, (ndarray, WCS) tuple, or a list or tuple of those
        The cutouts. Arrays are (H, W) or (C, H, W). NDData uncertainties may be
        ``VarianceUncertainty``, ``StdDevUncertainty`` or ``InverseVariance``; NDData
        ``psf`` and ``meta`` band keywords are used.
    psf : path, array, galsim.GSObject or list per band, optional
        PSF of every input, overriding any PSF found with the file (see
        :func:`galdeblend.io.psf.load_psf`).
    variance, weight : path, array or float, optional
        Per-pixel variance, or weight (inverse variance, 0 = no data), overriding the file's:
        a FITS file (first image HDU), an array (H, W), (C, H, W) or (C,) (one value per
        band), or one number. At most one of the two.
    mask : path, array or bool, optional
        Extra bad pixels (True or non-zero = bad), (H, W) or (C, H, W); added to the file's.
    band : str or sequence of str, optional
        Band names, one per plane: ``"g,r,i"`` or ``["g", "r", "i"]``.
    require_wcs : bool, default True
        Raise when an input has no celestial WCS.
    bad_mask_bits : collection of str, optional
        Names of the bad mask planes, replacing the defaults
        (:data:`galdeblend.io.masks.AFW_DEFAULT_BAD`, ``BAD, SAT, INTRP, CR, EDGE,
        NO_DATA, SUSPECT, UNMASKEDNAN, CLIPPED`` for afw; ``SATUR, ALLMASK`` per band for the
        Legacy Surveys). Names a file does not declare are ignored.
    on_error : {"raise", "skip"}, default "raise"
        On a bad input raise its InputError, or warn (GaldeblendWarning naming it and the
        reason), skip it and go on.
    failures : list, optional
        With ``on_error="skip"``, ``(source, error)`` is appended for every skipped input.

    Returns
    -------
    list of Observation
        In input order; one per input (per chip for HST flt/flc files). Per-band files of
        one field stay separate: see :func:`stack_bands`.

    Raises
    ------
    TypeError
        An input or option of a type that is not accepted.
    InputError
        A bad input (message names the file, HDU and problem): not FITS, no image HDU,
        disagreeing shapes, no WCS when required, all pixels masked, unusable PSF.

    Warns
    -----
    DataWarning
        Pixels masked for non-finite data or variance, variance estimated, PSF truncated
        or re-centred.
    """
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if variance is not None and weight is not None:
        raise InputError("give variance= or weight=, not both")
    options = _Options(psf, variance, weight, mask, band, require_wcs, bad_mask_bits)
    several = isinstance(inputs, (list, tuple)) and not (
        isinstance(inputs, fits.HDUList) or _is_array_wcs_pair(inputs)
    )
    items = list(inputs) if several else [inputs]
    observations = []
    for index, item in enumerate(items):
        source = _source_name(item, index)
        try:
            observations.extend(_read_one(item, source=source, options=options))
        except InputError as error:
            if on_error == "raise":
                raise
            warnings.warn(f"skipped {source}: {error}", GaldeblendWarning, stacklevel=2)
            if failures is not None:
                failures.append((source, error))
    return observations


def stack_bands(observations: Sequence[Observation]) -> Observation:
    """Stack observations of one pixel grid into one multi-band observation.

    Parameters
    ----------
    observations : sequence of Observation, each (C_i, H, W)
        Same (H, W), same WCS (to 0.01 pixel) or all without WCS, distinct band names, and
        all with or all without a PSF.

    Returns
    -------
    Observation, shape (sum C_i, H, W)
        Planes in input order; PSFs zero-padded to a common size.

    Raises
    ------
    InputError
        Grids, WCS or PSF availability disagree, or a band appears twice.
    """
    if not observations:
        raise InputError("stack_bands needs at least one observation")
    first = observations[0]
    for other in observations[1:]:
        if other.shape[1:] != first.shape[1:]:
            raise InputError(
                f"stack_bands: {other.source} has grid {other.shape[1:]}, "
                f"{first.source} has {first.shape[1:]}"
            )
        if not _same_grid(first.wcs, other.wcs, first.shape[1:]):
            raise InputError(
                f"stack_bands: the WCS of {other.source} differs from {first.source}'s"
            )
        if (other.psf is None) != (first.psf is None):
            raise InputError(
                f"stack_bands: {first.source if first.psf is None else other.source} has no "
                f"PSF, but the other observations do"
            )
    bands = tuple(b for o in observations for b in o.bands)
    if len(set(bands)) != len(bands):
        raise InputError(f"stack_bands: bands {bands} appear more than once")
    psf = None
    if first.psf is not None:
        psf = stack_psfs([plane for o in observations for plane in o.psf])
    hdus = {o.hdu for o in observations}
    return Observation(
        data=np.concatenate([o.data for o in observations]),
        variance=np.concatenate([o.variance for o in observations]),
        mask=np.concatenate([o.mask for o in observations]),
        psf=psf,
        wcs=first.wcs,
        bands=bands,
        source=" + ".join(o.source for o in observations),
        hdu=hdus.pop() if len(hdus) == 1 else None,
        meta={
            "stacked_from": [o.source for o in observations],
            "meta": [o.meta for o in observations],
        },
    )


def _same_grid(wcs_a: WCS | None, wcs_b: WCS | None, shape: tuple[int, int]) -> bool:
    """Whether two WCS map the corners and centre of an (H, W) grid to the same sky points."""
    if wcs_a is None or wcs_b is None:
        return wcs_a is None and wcs_b is None
    h, w = shape
    x = np.array([0, w - 1, 0, w - 1, (w - 1) / 2])
    y = np.array([0, 0, h - 1, h - 1, (h - 1) / 2])
    x_b, y_b = wcs_b.world_to_pixel(wcs_a.pixel_to_world(x, y))
    return bool(np.all(np.hypot(x_b - x, y_b - y) < 0.01))


# --------------------------------------------------------------------------- inputs


def _source_name(item: object, index: int) -> str:
    """Name of an input for messages: its path, or its type and position in the list."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, fits.HDUList) and item.filename():
        return str(item.filename())
    return f"<{type(item).__name__} #{index}>"


def _is_array_wcs_pair(item: object) -> bool:
    """Whether an input is an ``(array, WCS or None)`` tuple."""
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], np.ndarray)
        and isinstance(item[1], (WCS, type(None)))
    )


def _read_one(item: object, *, source: str, options: _Options) -> list[Observation]:
    """Read one input (any accepted type) into its observations."""
    path = None
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        cutouts = _read_path(path, source=source, options=options)
    elif isinstance(item, fits.HDUList):
        cutouts = _read_hdulist(item, source=source, options=options)
    elif isinstance(item, _IMAGE_HDUS):
        cutouts = _read_hdulist(fits.HDUList([item]), source=source, options=options)
    elif isinstance(item, NDData):
        cutouts = [_from_nddata(item, source=source, options=options)]
    elif _is_array_wcs_pair(item):
        data = _cube(np.asarray(item[0]), source=source, hdu=None)
        cutouts = [
            _Cutout(
                data=data,
                variance=None,
                mask=np.zeros(data.shape, dtype=bool),
                wcs=_celestial(item[1]),
                bands=_resolve_bands(options.band, [], len(data), source=source),
                hdu=None,
                convention="array",
                variance_source="none",
            )
        ]
    else:
        raise TypeError(f"cannot read a {type(item).__name__}: inputs must be {_ACCEPTED}")
    if path is not None:
        for cutout in cutouts:
            if cutout.psf is None:
                cutout.psf = _sibling_psf(path, [cutout.header, cutout.primary])
    return [_finish(cutout, source=source, options=options) for cutout in cutouts]


def _read_path(path: Path, *, source: str, options: _Options) -> list[_Cutout]:
    """Open a FITS file and read it with its convention."""
    if not path.is_file():
        raise InputError(f"{source}: file not found")
    try:
        with fits.open(path) as hdul:
            return _read_hdulist(hdul, source=source, options=options)
    except OSError as error:
        raise InputError(f"{source}: not a readable FITS file ({error})") from error


def _sibling_psf(path: Path, headers: Sequence[Mapping]) -> Path | None:
    """The PSF file beside ``path``: its PSFFILE keyword, NAME_psf.fits, NAME.psf.fits, NAME.psf."""
    name = path.name
    for suffix in (".fits.gz", ".fits.fz", ".fits", ".fit", ".fz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    candidates = [f"{name}_psf.fits", f"{name}.psf.fits", f"{name}.psf"]
    candidates[:0] = [str(h["PSFFILE"]).strip() for h in headers if "PSFFILE" in h]
    for candidate in candidates:
        if (path.parent / candidate).is_file():
            return path.parent / candidate
    return None


# --------------------------------------------------------------------------- conventions


def _read_hdulist(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """Detect the FITS convention of an HDUList and read it."""
    names = {hdu.name.upper() for hdu in hdul}
    primary = hdul[0].header
    if "SIMKIND" in primary and "SURVEYS" in primary and "GALAXIES" in names:
        raise InputError(
            f"{source}: a galdeblend simulation truth file, not a cutout (read it with "
            "galdeblend.simulate.read_truth; give galdeblend run the blend_*_<survey>.fits files)"
        )
    if "IMAGE" in names and names & {"MASK", "VARIANCE"}:
        reader = _read_afw
    elif "SCI" in names:
        if any(n.startswith("VAR_") for n in names) or primary.get("TELESCOP") == "JWST":
            reader = _read_jwst
        elif names & {"DQ", "ERR"}:
            reader = _read_hst_flt
        else:
            reader = _read_hst_drz
    elif any(_imagetyp(hdu) in ("INVVAR", "MASKBITS") for hdu in hdul):
        reader = _read_legacy
    else:
        reader = _read_plain
    cutouts = reader(hdul, source=source, options=options)
    if "PSF" in names and hdul["PSF"].is_image:
        for cutout in cutouts:
            cutout.psf = np.array(hdul["PSF"].data, dtype=np.float64)
    for cutout in cutouts:
        cutout.primary = primary
    return cutouts


def _imagetyp(hdu: fits.hdu.base.ExtensionHDU) -> str:
    return str(hdu.header.get("IMAGETYP", "")).strip().upper()


def _read_afw(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """LSST/HSC afw: IMAGE, MASK (MP_* planes), VARIANCE."""
    image = hdul["IMAGE"]
    data = _cube(image.data, source=source, hdu="IMAGE")
    variance = None
    if "VARIANCE" in hdul:
        variance = _plane_like(hdul["VARIANCE"].data, data, source=source, what="HDU VARIANCE")
    mask = np.zeros(data.shape, dtype=bool)
    if "MASK" in hdul:
        bits = _plane_like(hdul["MASK"].data, data, source=source, what="HDU MASK")
        names = AFW_DEFAULT_BAD if options.bad_mask_bits is None else options.bad_mask_bits
        mask = planes_to_mask(bits, afw_planes(hdul["MASK"].header), names)
    return [
        _Cutout(
            data=data,
            variance=variance,
            mask=mask,
            wcs=_header_wcs(image.header, hdul, source=source, hdu="IMAGE"),
            bands=_resolve_bands(
                options.band, [image.header, hdul[0].header], len(data), source=source
            ),
            hdu="IMAGE",
            convention="afw",
            variance_source="HDU VARIANCE" if variance is not None else "none",
            header=image.header,
        )
    ]


def _read_hst_drz(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """HST drizzled: SCI, WHT (inverse variance), optional CTX."""
    sci = hdul["SCI"]
    data = _cube(sci.data, source=source, hdu="SCI")
    variance, mask = None, np.zeros(data.shape, dtype=bool)
    if "WHT" in hdul:
        weight = _plane_like(hdul["WHT"].data, data, source=source, what="HDU WHT")
        variance, mask = _inverse(weight)
    return [
        _sci_cutout(
            hdul, sci, data, variance, mask, "SCI", "hst_drz", "1 / HDU WHT", source, options
        )
    ]


def _read_hst_flt(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """HST flt/flc: SCI, ERR, DQ for every chip (EXTVER)."""
    cutouts = []
    versions = sorted({hdu.ver for hdu in hdul if hdu.name.upper() == "SCI"})
    for version in versions:
        sci = hdul["SCI", version]
        label = f"SCI,{version}"
        data = _cube(sci.data, source=source, hdu=label)
        variance, mask = None, np.zeros(data.shape, dtype=bool)
        if ("ERR", version) in hdul:
            err = _plane_like(
                hdul["ERR", version].data, data, source=source, what=f"HDU ERR,{version}"
            )
            variance = err**2
        if ("DQ", version) in hdul:
            mask = (
                _plane_like(hdul["DQ", version].data, data, source=source, what=f"HDU DQ,{version}")
                != 0
            )
        cutouts.append(
            _sci_cutout(
                hdul,
                sci,
                data,
                variance,
                mask,
                label,
                "hst_flt",
                f"HDU ERR,{version} ** 2",
                source,
                options,
            )
        )
    return cutouts


def _read_jwst(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """JWST i2d: SCI, ERR, WHT, VAR_POISSON/VAR_RNOISE/VAR_FLAT."""
    sci = hdul["SCI"]
    data = _cube(sci.data, source=source, hdu="SCI")
    parts = [name for name in ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT") if name in hdul]
    variance, how = None, "none"
    if parts:
        variance = sum(
            _plane_like(hdul[n].data, data, source=source, what=f"HDU {n}") for n in parts
        )
        how = " + ".join(f"HDU {n}" for n in parts)
    elif "ERR" in hdul:
        variance = _plane_like(hdul["ERR"].data, data, source=source, what="HDU ERR") ** 2
        how = "HDU ERR ** 2"
    mask = np.zeros(data.shape, dtype=bool)
    if "WHT" in hdul:
        mask = _plane_like(hdul["WHT"].data, data, source=source, what="HDU WHT") == 0
    return [_sci_cutout(hdul, sci, data, variance, mask, "SCI", "jwst_i2d", how, source, options)]


def _sci_cutout(
    hdul: fits.HDUList,
    sci: fits.ImageHDU,
    data: np.ndarray,
    variance: np.ndarray | None,
    mask: np.ndarray,
    label: str,
    convention: str,
    variance_source: str,
    source: str,
    options: _Options,
) -> _Cutout:
    """The cutout of a SCI extension (HST, JWST) with its header WCS and bands."""
    return _Cutout(
        data=data,
        variance=variance,
        mask=mask,
        wcs=_header_wcs(sci.header, hdul, source=source, hdu=label),
        bands=_resolve_bands(options.band, [sci.header, hdul[0].header], len(data), source=source),
        hdu=label,
        convention=convention,
        variance_source=variance_source if variance is not None else "none",
        header=sci.header,
    )


def _read_legacy(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """Legacy Surveys: image cube, INVVAR and MASKBITS HDUs marked by IMAGETYP."""
    index, image = _first_image(hdul, source=source, skip=("INVVAR", "MASKBITS"))
    label = image.name or index
    data = _cube(image.data, source=source, hdu=label)
    bands = _resolve_bands(options.band, [image.header, hdul[0].header], len(data), source=source)
    variance, mask = None, np.zeros(data.shape, dtype=bool)
    for number, hdu in enumerate(hdul):
        kind = _imagetyp(hdu)
        if kind == "INVVAR":
            weight = _plane_like(hdu.data, data, source=source, what=f"INVVAR HDU {number}")
            variance, no_data = _inverse(weight)
            mask |= no_data
        elif kind == "MASKBITS":
            bits = _plane_like(hdu.data, data, source=source, what=f"MASKBITS HDU {number}")
            mask |= legacy_bad_pixels(bits, bands, options.bad_mask_bits)
    return [
        _Cutout(
            data=data,
            variance=variance,
            mask=mask,
            wcs=_header_wcs(image.header, hdul, source=source, hdu=label),
            bands=bands,
            hdu=label,
            convention="legacy",
            variance_source="1 / INVVAR" if variance is not None else "none",
            header=image.header,
        )
    ]


def _read_plain(hdul: fits.HDUList, *, source: str, options: _Options) -> list[_Cutout]:
    """Plain: the first 2-D or 3-D image HDU, with noise from the options."""
    index, image = _first_image(hdul, source=source, skip=())
    label = image.name or index
    data = _cube(image.data, source=source, hdu=label)
    return [
        _Cutout(
            data=data,
            variance=None,
            mask=np.zeros(data.shape, dtype=bool),
            wcs=_header_wcs(image.header, hdul, source=source, hdu=label),
            bands=_resolve_bands(
                options.band, [image.header, hdul[0].header], len(data), source=source
            ),
            hdu=label,
            convention="plain",
            variance_source="none",
            header=image.header,
        )
    ]


def _first_image(
    hdul: fits.HDUList, *, source: str, skip: tuple[str, ...]
) -> tuple[int, fits.hdu.base.ExtensionHDU]:
    """First HDU with 2-D or 3-D image data, not named PSF, with IMAGETYP not in ``skip``."""
    for index, hdu in enumerate(hdul):
        if (
            isinstance(hdu, _IMAGE_HDUS)
            and hdu.name.upper() != "PSF"
            and _imagetyp(hdu) not in skip
            and hdu.data is not None
            and hdu.data.ndim in (2, 3)
        ):
            return index, hdu
    raise InputError(f"{source}: no image HDU (no HDU holds a 2-D or 3-D image)")


def _from_nddata(item: NDData, *, source: str, options: _Options) -> _Cutout:
    """An NDData/CCDData: data, uncertainty as variance, mask, WCS, psf, meta bands."""
    data = _cube(np.asarray(item.data), source=source, hdu=None)
    variance, how = None, "none"
    uncertainty = item.uncertainty
    if uncertainty is not None:
        values = np.asarray(uncertainty.array, dtype=np.float64)
        if isinstance(uncertainty, VarianceUncertainty):
            variance = values
        elif isinstance(uncertainty, StdDevUncertainty):
            variance = values**2
        elif isinstance(uncertainty, InverseVariance):
            with np.errstate(divide="ignore"):
                variance = 1.0 / values
        else:
            raise InputError(
                f"{source}: uncertainty of type {type(uncertainty).__name__} is not understood; "
                "use VarianceUncertainty, StdDevUncertainty or InverseVariance"
            )
        variance = _broadcast(variance, data.shape, source=source, what="the uncertainty")
        how = f"NDData {type(uncertainty).__name__}"
    mask = np.zeros(data.shape, dtype=bool)
    if item.mask is not None:
        mask = _broadcast(np.asarray(item.mask) != 0, data.shape, source=source, what="the mask")
    meta = {str(k).upper(): v for k, v in dict(item.meta or {}).items()}
    return _Cutout(
        data=data,
        variance=variance,
        mask=mask,
        wcs=_celestial(item.wcs, source=source),
        bands=_resolve_bands(options.band, [meta], len(data), source=source),
        hdu=None,
        convention="nddata",
        variance_source=how,
        header=meta,
        psf=item.psf,
    )


# --------------------------------------------------------------------------- pieces


def _cube(array: np.ndarray | None, *, source: str, hdu: str | int | None) -> np.ndarray:
    """An image as a float64 (C, H, W) cube."""
    where = f"{source}" if hdu is None else f"{source}, HDU {hdu}"
    if array is None:
        raise InputError(f"{where}: the HDU holds no image data")
    data = np.array(array, dtype=np.float64)
    if data.ndim == 2:
        return data[None]
    if data.ndim != 3 or 0 in data.shape:
        raise InputError(f"{where}: expected a 2-D or 3-D image, got shape {data.shape}")
    return data


def _plane_like(
    array: np.ndarray | None, data: np.ndarray, *, source: str, what: str
) -> np.ndarray:
    """A variance/mask/weight HDU's array, checked against and broadcast to the image."""
    if array is None:
        raise InputError(f"{source}: {what} holds no data")
    return _broadcast(np.asarray(array), data.shape, source=source, what=what)


def _broadcast(
    array: np.ndarray, shape: tuple[int, int, int], *, source: str, what: str
) -> np.ndarray:
    """Broadcast a scalar, (C,), (H, W) or (C, H, W) array to the image shape (C, H, W)."""
    if array.ndim == 1 and array.shape == shape[:1]:
        array = array[:, None, None]
    if array.ndim in (0, 3) or array.shape == shape[1:]:
        try:
            return np.broadcast_to(array, shape).copy()
        except ValueError:
            pass
    raise InputError(
        f"{source}: {what} has shape {array.shape}, but the image has shape {shape} "
        f"(expected a number, ({shape[0]},), {shape[1:]} or {shape})"
    )


def _inverse(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance from an inverse-variance weight; weight 0 means no data (masked)."""
    weight = weight.astype(np.float64)
    no_data = weight == 0
    with np.errstate(divide="ignore"):
        variance = np.where(no_data, np.inf, 1.0 / np.where(no_data, 1.0, weight))
    return variance, no_data


def _celestial(wcs: object, *, source: str = "") -> WCS | None:
    """The celestial part of an astropy WCS (None if there is none)."""
    if wcs is None:
        return None
    if not isinstance(wcs, WCS):
        wcs = getattr(wcs, "low_level_wcs", wcs)
        if not isinstance(wcs, WCS):
            raise InputError(
                f"{source}: a WCS must be an astropy.wcs.WCS, got {type(wcs).__name__}"
            )
    return wcs.celestial if wcs.has_celestial else None


def _header_wcs(
    header: fits.Header, hdul: fits.HDUList, *, source: str, hdu: str | int
) -> WCS | None:
    """The celestial WCS of an image header (SIP and lookup distortions included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, fobj=hdul)
        except Exception as error:  # astropy raises many types for malformed WCS keywords
            raise InputError(f"{source}, HDU {hdu}: unreadable WCS ({error})") from error
    return _celestial(wcs, source=source)


def _resolve_bands(
    option: str | Sequence[str] | None, headers: Iterable[Mapping], n_bands: int, *, source: str
) -> tuple[str, ...]:
    """Band names: the band= option, else header keywords, else band0, band1, ..."""
    if option is not None:
        names = [b.strip() for b in option.split(",")] if isinstance(option, str) else list(option)
        if len(names) != n_bands:
            raise InputError(
                f"{source}: band= gives {len(names)} names {names}, the image has {n_bands} planes"
            )
        return tuple(str(b) for b in names)
    for header in headers:
        names = _header_bands(header, n_bands)
        if names is not None:
            return names
    return tuple(f"band{c}" for c in range(n_bands))


def _header_bands(header: Mapping, n_bands: int) -> tuple[str, ...] | None:
    """Band names from BAND0..., BANDS, or (one plane) BAND / FILTER / FILTER1-2 keywords."""
    numbered = [f"BAND{c}" for c in range(n_bands)]
    if all(key in header for key in numbered):
        return tuple(str(header[key]).strip() for key in numbered)
    if "BANDS" in header:
        value = str(header["BANDS"]).strip()
        names = [b.strip() for b in value.replace(",", " ").split()]
        if len(names) == 1 and len(value) == n_bands:
            names = list(value)
        if len(names) == n_bands:
            return tuple(names)
    if n_bands == 1:
        for key in ("BAND", "FILTER", "FILTER2", "FILTER1"):
            value = str(header.get(key, "")).strip()
            if value and not value.upper().startswith("CLEAR"):
                return (value,)
    return None


def _option_array(value: PlaneSpec, *, name: str, source: str) -> np.ndarray:
    """A variance=/weight=/mask= option as an array: FITS file, array or scalar."""
    if isinstance(value, (str, os.PathLike)):
        try:
            with fits.open(value) as hdul:
                _, hdu = _first_image(hdul, source=f"{name}={value}", skip=())
                return np.array(hdu.data)
        except FileNotFoundError as error:
            raise InputError(f"{source}: {name} file {value} not found") from error
        except OSError as error:
            raise InputError(f"{source}: {name} file {value} is not FITS ({error})") from error
    if isinstance(value, (np.ndarray, int, float, bool, np.number, np.bool_)):
        return np.asarray(value)
    raise TypeError(f"{name} must be a FITS path, an array or a number, got {type(value).__name__}")


def _apply_options(cutout: _Cutout, *, source: str, options: _Options) -> _Cutout:
    """Override variance (variance=/weight=), add the mask= pixels, override the PSF."""
    shape = cutout.data.shape
    if options.variance is not None:
        array = _option_array(options.variance, name="variance", source=source)
        cutout = replace(
            cutout,
            variance=_broadcast(array.astype(np.float64), shape, source=source, what="variance="),
            variance_source="variance= option",
        )
    if options.weight is not None:
        array = _option_array(options.weight, name="weight", source=source)
        variance, no_data = _inverse(_broadcast(array, shape, source=source, what="weight="))
        cutout = replace(
            cutout,
            variance=variance,
            mask=cutout.mask | no_data,
            variance_source="1 / weight= option",
        )
    if options.mask is not None:
        array = _option_array(options.mask, name="mask", source=source)
        cutout = replace(
            cutout, mask=cutout.mask | _broadcast(array != 0, shape, source=source, what="mask=")
        )
    if options.psf is not None:
        cutout = replace(cutout, psf=options.psf)
    return cutout


def _finish(cutout: _Cutout, *, source: str, options: _Options) -> Observation:
    """Apply the options, clean the pixels, load the PSF and build the Observation."""
    where = source if cutout.hdu is None else f"{source}, HDU {cutout.hdu}"
    cutout = _apply_options(cutout, source=where, options=options)
    if cutout.wcs is None and options.require_wcs:
        raise InputError(
            f"{where}: no celestial WCS (RA/Dec CTYPE keywords); give one or pass require_wcs=False"
        )
    data, mask = cutout.data, cutout.mask.copy()
    bad = ~np.isfinite(data)
    if cutout.variance is not None:
        with np.errstate(invalid="ignore"):
            bad |= ~(np.isfinite(cutout.variance) & (cutout.variance > 0))
    if np.any(bad & ~mask):
        warnings.warn(
            f"{where}: masked {np.sum(bad & ~mask)} pixels with non-finite data, or variance "
            "<= 0 or non-finite",
            DataWarning,
            stacklevel=4,
        )
    mask |= bad
    if mask.all():
        raise InputError(f"{where}: every pixel is masked")
    variance, variance_source = cutout.variance, cutout.variance_source
    if variance is None:
        variance = _estimate_variance(data, mask, source=where)
        variance_source = "estimated (sigma-clipped MAD of the image)"
    data = np.where(mask, 0.0, data)
    variance = _fill_masked_variance(np.asarray(variance, dtype=np.float64), mask)

    h, w = data.shape[1:]
    position = (
        (w + 1) / 2 - float(cutout.header.get("LTV1", 0.0)),
        (h + 1) / 2 - float(cutout.header.get("LTV2", 0.0)),
    )
    pixel_scale = None
    if cutout.wcs is not None:
        pixel_scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(cutout.wcs)))) * 3600.0
    psf = load_psf(
        cutout.psf, n_bands=len(data), pixel_scale=pixel_scale, position=position, source=where
    )
    return Observation(
        data=data,
        variance=variance,
        mask=mask,
        psf=psf,
        wcs=cutout.wcs,
        bands=cutout.bands,
        source=source,
        hdu=cutout.hdu,
        meta={
            "convention": cutout.convention,
            "variance": variance_source,
            "psf": None if cutout.psf is None else _psf_label(cutout.psf),
            "header": cutout.header.copy(),
            "primary_header": cutout.primary.copy(),
        },
    )


def _psf_label(spec: object) -> str:
    """Where the PSF came from, for ``meta['psf']``."""
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return type(spec).__name__


def _estimate_variance(data: np.ndarray, mask: np.ndarray, *, source: str) -> np.ndarray:
    """A constant per-band background variance from the sigma-clipped MAD of the image.

    Returns an array of shape (C, H, W) and warns that the variance was estimated.
    """
    levels = []
    for c in range(len(data)):
        values = data[c][~mask[c]]
        if values.size < _MIN_PIXELS_FOR_NOISE:
            raise InputError(
                f"{source}: no variance given and band {c} has only {values.size} usable pixels "
                "to estimate it from"
            )
        _, _, std = sigma_clipped_stats(values, sigma=3.0, stdfunc="mad_std")
        if not std > 0:
            raise InputError(
                f"{source}: no variance given and band {c} is constant, so none can be estimated"
            )
        levels.append(std**2)
    warnings.warn(
        f"{source}: no variance given; estimated a constant background variance per band "
        f"{[float(f'{v:.4g}') for v in levels]} (sigma-clipped MAD); pass variance= or weight= "
        "to use the real noise",
        DataWarning,
        stacklevel=5,
    )
    return np.broadcast_to(np.array(levels)[:, None, None], data.shape).copy()


def _fill_masked_variance(variance: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Set masked pixels' variance to the band's median unmasked variance (all finite, > 0)."""
    variance = variance.copy()
    for c in range(len(variance)):
        good = ~mask[c]
        variance[c][~good] = np.median(variance[c][good]) if good.any() else 1.0
    return variance
