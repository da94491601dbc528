"""PSF images: loading (files, arrays, galsim objects, PSFEx models) and checking.

Every PSF that reaches an :class:`~galdeblend.io.observation.Observation` has passed
:func:`_validate_psf`: it is finite, odd-sized, has its peak on the central pixel and its
centroid within one pixel of it, and sums to 1.

Centring policy
---------------
The central pixel of a PSF stamp is the origin of the convolution kernel, so it must be the
PSF's centre:

* odd-sized axis: the peak must be on the central pixel or one of its neighbours. A peak one
  pixel off (common for PSFs drawn with an even-size convention, e.g. a 179-pixel HST PSF
  peaking at index 90) is re-centred by zero-padding the far side, with a
  :class:`~galdeblend.errors.DataWarning`; farther off is an :class:`InputError`;
* even-sized axis: the peak must be one of the two central pixels, and the centroid must
  not sit on the boundary between them (then the stamp has no central pixel: "even-sized
  without a centre", an :class:`InputError`). Otherwise the stamp is zero-padded by one
  pixel so that the peak is the centre of an odd-sized stamp (lossless, no warning);
* afterwards the flux centroid must lie within one pixel of the centre (InputError).

Nothing is interpolated, so no sub-pixel shift is ever applied to a PSF given as an image.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import galsim
import numpy as np
from astropy.io import fits
from scipy.ndimage import map_coordinates

from galdeblend.errors import DataWarning, InputError

__all__ = [
    "PsfSpec",
    "TRUNCATION_FRACTION",
    "load_psf",
    "read_psf_file",
    "psfex_image",
    "draw_galsim_psf",
    "stack_psfs",
]

PsfSpec = str | os.PathLike | np.ndarray | galsim.GSObject | Sequence
"""What a PSF may be given as: a file path, an array, a galsim object, or a list per band."""

TRUNCATION_FRACTION = 1e-3
"""A PSF whose border pixels hold more than this fraction of its flux is warned about."""

_CENTRE_TOLERANCE = 1.0  # pixels, peak and centroid
_EDGE_TOLERANCE = 0.1  # pixels: centroid this close to a pixel edge has no central pixel


def _validate_psf(psf: np.ndarray, *, source: str) -> np.ndarray:
    """Check a PSF image and return it odd-sized, centred and normalized.

    See the module docstring for the centring policy.

    Parameters
    ----------
    psf : array_like, shape (h, w)
        PSF image at the cutout's pixel scale.
    source : str
        Where the PSF came from, for messages.

    Returns
    -------
    ndarray, shape (h', w')
        float64 PSF with odd h', w' (h' >= h, w' >= w), peak at ``(h' // 2, w' // 2)``,
        summing to 1.

    Raises
    ------
    InputError
        Not 2-D, empty, non-finite, all zero or of non-positive sum, peak off-centre,
        even-sized without a centre, centroid off-centre.

    Warns
    -----
    DataWarning
        The PSF is truncated (border holds more than :data:`TRUNCATION_FRACTION` of the flux)
        or was re-centred by one pixel.
    """
    image = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"{source}: a PSF must be a 2-D image, got shape {image.shape}")
    if image.size == 0:
        raise InputError(f"{source}: the PSF is empty (shape {image.shape})")
    if not np.all(np.isfinite(image)):
        raise InputError(f"{source}: the PSF has {np.sum(~np.isfinite(image))} non-finite pixels")
    total = image.sum()
    if not np.any(image) or total <= 0:
        raise InputError(f"{source}: the PSF is all zero or sums to {total:g} (must be > 0)")

    peak = np.unravel_index(np.argmax(image), image.shape)
    centroid = _centroid(image)
    pad_width = []
    for axis, n in enumerate(image.shape):
        centre = (n - 1) / 2
        if abs(peak[axis] - centre) > _CENTRE_TOLERANCE:
            raise InputError(
                f"{source}: the PSF is off-centre: its peak is at pixel {tuple(map(int, peak))} "
                f"of a {image.shape} stamp, more than {_CENTRE_TOLERANCE:g} pixel from its centre"
            )
        if n % 2 == 0 and abs(centroid[axis] - centre) < _EDGE_TOLERANCE:
            raise InputError(
                f"{source}: the PSF is even-sized without a centre: shape {image.shape}, its "
                f"centroid {tuple(np.round(centroid, 2))} lies between the two central pixels"
            )
        half = max(peak[axis], n - 1 - peak[axis])
        pad_width.append((half - peak[axis], half - (n - 1 - peak[axis])))
    if any(
        n % 2 == 1 and before != after
        for n, (before, after) in zip(image.shape, pad_width, strict=True)
    ):
        warnings.warn(
            f"{source}: the PSF peak is at {tuple(map(int, peak))}, one pixel off the centre of "
            f"its {image.shape} stamp; re-centred by zero-padding",
            DataWarning,
            stacklevel=2,
        )
    border = np.abs(image).sum() - np.abs(image[1:-1, 1:-1]).sum()
    if border > TRUNCATION_FRACTION * total:
        warnings.warn(
            f"{source}: the PSF looks truncated: its border pixels hold {border / total:.2%} of "
            f"its flux (more than {TRUNCATION_FRACTION:.1%}); the missing wings are ignored",
            DataWarning,
            stacklevel=2,
        )

    image = np.pad(image, pad_width)
    offset = _centroid(image) - (np.array(image.shape) - 1) / 2
    if np.any(np.abs(offset) > _CENTRE_TOLERANCE):
        raise InputError(
            f"{source}: the PSF is off-centre: its centroid is {tuple(np.round(offset, 2))} "
            f"pixels from its peak, more than {_CENTRE_TOLERANCE:g}"
        )
    return image / total


def _centroid(image: np.ndarray) -> np.ndarray:
    """Flux-weighted centroid ``(y, x)`` in 0-based pixel indices of an ``(h, w)`` image."""
    total = image.sum()
    return np.array(
        [
            (image.sum(axis=1) * np.arange(image.shape[0])).sum() / total,
            (image.sum(axis=0) * np.arange(image.shape[1])).sum() / total,
        ]
    )


def stack_psfs(psfs: Sequence[np.ndarray]) -> np.ndarray:
    """Stack odd-sized centred PSFs, zero-padding them to a common size.

    Parameters
    ----------
    psfs : sequence of ndarray, each (h_c, w_c) with odd sizes
        Validated PSFs (see :func:`_validate_psf`).

    Returns
    -------
    ndarray, shape (C, h, w)
        With ``h = max h_c``, ``w = max w_c``; every PSF stays on the central pixel.
    """
    h = max(p.shape[0] for p in psfs)
    w = max(p.shape[1] for p in psfs)
    return np.stack(
        [np.pad(p, [((h - p.shape[0]) // 2,) * 2, ((w - p.shape[1]) // 2,) * 2]) for p in psfs]
    )


def load_psf(
    spec: PsfSpec | None,
    *,
    n_bands: int,
    pixel_scale: float | None,
    position: tuple[float, float],
    source: str,
) -> np.ndarray | None:
    """Load, check and stack the PSF of every band of a cutout.

    Parameters
    ----------
    spec : path, array, galsim.GSObject, list of those, or None
        * a FITS file path: a PSF image (2-D, or 3-D with one plane per band) in its first
          image HDU, or a PSFEx model (``PSF_DATA`` table, see :func:`psfex_image`);
        * an array ``(h, w)`` (used for every band) or ``(C, h, w)``;
        * a galsim object, drawn at the cutout's pixel scale (:func:`draw_galsim_psf`);
        * a list or tuple of C of the above, one per band (so a single PSF must be an
          ndarray, not a nested list).
    n_bands : int
        Number of bands C of the cutout.
    pixel_scale : float or None
        Cutout pixel scale in arcsec (needed for galsim objects).
    position : (float, float)
        ``(x, y)`` 1-based pixel position of the cutout centre in the coordinates of the
        image the PSFEx model was fitted on.
    source : str
        Name of the cutout, for messages.

    Returns
    -------
    ndarray, shape (C, h, w), or None
        Validated PSFs (None if ``spec`` is None).
    """
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        if len(spec) != n_bands:
            raise InputError(f"{source}: psf= lists {len(spec)} PSFs for {n_bands} bands")
        planes = []
        for band, item in enumerate(spec):
            array = _psf_array(item, pixel_scale=pixel_scale, position=position, source=source)
            if array.ndim == 3 and array.shape[0] == 1:
                array = array[0]
            planes.append((array, f"{source}: PSF of band {band} ({_describe(item)})"))
    else:
        array = _psf_array(spec, pixel_scale=pixel_scale, position=position, source=source)
        label = f"{source}: PSF {_describe(spec)}"
        if array.ndim == 2:
            planes = [(array, label)] * n_bands
        elif array.ndim == 3 and array.shape[0] == n_bands:
            planes = [(plane, f"{label} plane {band}") for band, plane in enumerate(array)]
        else:
            raise InputError(
                f"{label}: shape {array.shape}, expected (h, w) or ({n_bands}, h, w) for "
                f"{n_bands} bands"
            )
    return stack_psfs([_validate_psf(array, source=label) for array, label in planes])


def _describe(spec: object) -> str:
    """Short description of a PSF spec for messages."""
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    if isinstance(spec, galsim.GSObject):
        return f"galsim {type(spec).__name__}"
    return f"array {np.shape(spec)}"


def _psf_array(
    spec: object, *, pixel_scale: float | None, position: tuple[float, float], source: str
) -> np.ndarray:
    """One PSF spec (not a list) as an unchecked ``(h, w)`` or ``(C, h, w)`` array."""
    if isinstance(spec, (str, os.PathLike)):
        return read_psf_file(spec, position=position)
    if isinstance(spec, galsim.GSObject):
        if pixel_scale is None:
            raise InputError(
                f"{source}: a galsim PSF needs the cutout's pixel scale, but it has no WCS"
            )
        return draw_galsim_psf(spec, pixel_scale=pixel_scale)
    if isinstance(spec, np.ndarray):
        return np.asarray(spec, dtype=np.float64)
    raise TypeError(
        f"{source}: psf must be a FITS path, an array, a galsim.GSObject or a list of those "
        f"(one per band), got {type(spec).__name__}"
    )


def read_psf_file(path: str | os.PathLike, *, position: tuple[float, float]) -> np.ndarray:
    """Read a PSF FITS file: a PSFEx model or a PSF image.

    Parameters
    ----------
    path : str or path-like
        The file.
    position : (float, float)
        ``(x, y)`` 1-based position at which a PSFEx model is evaluated.

    Returns
    -------
    ndarray, shape (h, w) or (C, h, w)
        Unchecked PSF image(s).
    """
    try:
        with fits.open(path) as hdul:
            for hdu in hdul:
                if isinstance(hdu, fits.BinTableHDU) and hdu.name == "PSF_DATA":
                    return psfex_image(hdu, position=position, source=str(path))
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and hdu.data.ndim in (2, 3):
                    return np.array(hdu.data, dtype=np.float64)
    except FileNotFoundError as error:
        raise InputError(f"PSF file {path} not found") from error
    except OSError as error:
        raise InputError(f"PSF file {path} is not a FITS file: {error}") from error
    raise InputError(f"PSF file {path}: no 2-D or 3-D image HDU and no PSFEx PSF_DATA table")


def psfex_image(hdu: fits.BinTableHDU, *, position: tuple[float, float], source: str) -> np.ndarray:
    """Evaluate a PSFEx model at a position and resample it to image pixels.

    The PSFEx basis ``PSF_MASK`` (K, n_y, n_x) is combined with the polynomial terms
    ``x^i y^j`` (j outer, i inner, i + j <= ``POLDEG1``) of the reduced coordinates
    ``x = (X - POLZERO1) / POLSCAL1``, ``y = (Y - POLZERO2) / POLSCAL2``; with
    ``POLNAXIS = 0`` only the constant term exists. The model is sampled every ``PSF_SAMP``
    image pixels with its centre at index ``(n_y // 2, n_x // 2)``; it is resampled to one
    sample per image pixel by cubic-spline interpolation (:func:`scipy.ndimage.map_coordinates`).

    Parameters
    ----------
    hdu : astropy.io.fits.BinTableHDU
        The ``PSF_DATA`` extension.
    position : (float, float)
        ``(X, Y)``: 1-based pixel position in the image the model was fitted on.
    source : str
        File name, for messages.

    Returns
    -------
    ndarray, shape (h, w)
        Unnormalized PSF at the image pixel scale, odd-sized, centred.
    """
    header = hdu.header
    basis = np.asarray(hdu.data["PSF_MASK"][0], dtype=np.float64)
    if basis.ndim == 2:
        basis = basis[None]
    n_axes = header.get("POLNAXIS", 0)
    if n_axes == 0:
        terms = np.ones(1)
    elif (
        n_axes == 2
        and header.get("POLNGRP", 1) == 1
        and str(header.get("POLNAME1", "")).startswith("X")
        and str(header.get("POLNAME2", "")).startswith("Y")
    ):
        degree = int(header["POLDEG1"])
        x = (position[0] - header["POLZERO1"]) / header["POLSCAL1"]
        y = (position[1] - header["POLZERO2"]) / header["POLSCAL2"]
        terms = np.array([x**i * y**j for j in range(degree + 1) for i in range(degree + 1 - j)])
    else:
        raise InputError(
            f"PSFEx file {source}: unsupported polynomial (POLNAXIS={n_axes}, "
            f"POLNGRP={header.get('POLNGRP')}); only X_IMAGE/Y_IMAGE polynomials are read"
        )
    if basis.shape[0] != terms.size:
        raise InputError(
            f"PSFEx file {source}: PSF_MASK has {basis.shape[0]} basis images, the polynomial "
            f"needs {terms.size}"
        )
    model = np.tensordot(terms, basis, axes=1)
    sampling = float(header.get("PSF_SAMP", 1.0))
    if sampling == 1.0:
        return model
    centre = np.array(model.shape) // 2
    radius = np.floor(np.minimum(centre, np.array(model.shape) - 1 - centre) * sampling)
    offsets = [np.arange(-r, r + 1) / sampling for r in radius.astype(int)]
    coords = np.meshgrid(centre[0] + offsets[0], centre[1] + offsets[1], indexing="ij")
    return map_coordinates(model, coords, order=3, mode="constant", cval=0.0)


def draw_galsim_psf(psf: galsim.GSObject, *, pixel_scale: float) -> np.ndarray:
    """Draw a galsim PSF profile as a pixelated PSF image.

    The profile is convolved with the pixel (galsim's default ``method="auto"``), as an
    image PSF is: pass the optical/atmospheric PSF, not an already pixelated one.

    Parameters
    ----------
    psf : galsim.GSObject
        The PSF profile, in arcsec.
    pixel_scale : float
        Pixel scale in arcsec.

    Returns
    -------
    ndarray, shape (n, n)
        The image, n odd (galsim's good image size, rounded up to odd), centred on the
        central pixel.
    """
    size = psf.getGoodImageSize(pixel_scale)
    size += 1 - size % 2
    return psf.drawImage(nx=size, ny=size, scale=pixel_scale).array.astype(np.float64)
