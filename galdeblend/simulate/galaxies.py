"""Galaxies for simulated scenes: parametric bulge + disk, or real HST COSMOS galaxies.

A :class:`Galaxy` is a sum of components, each a unit-flux galsim profile (angles in arcsec
on the sky, ``u`` to the west and ``v`` to the north, as on a north-up east-left image) with
its own spectral energy distribution: AB magnitudes at a few wavelengths, interpolated
linearly in ``log(wavelength)`` and held constant beyond the ends. The flux of a component
in a band is its SED at the band's effective wavelength, in nJy.

* Parametric (:func:`draw_parametric_galaxy`): a de Vaucouleurs bulge and an exponential disk
  sharing one ellipticity; reference-band magnitude from power-law number counts, size from
  a magnitude-dependent log-normal, power-law SEDs ``f_nu ~ lambda^alpha`` with a redder
  bulge than disk (so colours vary across the galaxy).
* Real (:func:`draw_real_galaxy`): a galaxy of the packaged COSMOS F814W sample
  (``galdeblend/data/cosmos``, via :class:`galsim.COSMOSCatalog`), randomly rotated and
  flipped, with the SED of its HSC g, r, i, z, y catalogue magnitudes rescaled to its F814W
  stamp flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import galsim
import numpy as np
from astropy.table import Table
from scipy.optimize import brentq
from scipy.special import gammainc, gammaincinv

from galdeblend.errors import InputError
from galdeblend.simulate.surveys import AB_NJY_ZEROPOINT, get_survey

__all__ = [
    "Component",
    "Galaxy",
    "CosmosSample",
    "GalaxyType",
    "cosmos_sample",
    "draw_galaxy",
    "draw_parametric_galaxy",
    "draw_real_galaxy",
]

GalaxyType = Literal["parametric", "real"]

COSMOS_CATALOG = "real_galaxy_catalog_26_extension_dev.fits"
"""File name of the packaged COSMOS real-galaxy catalogue (its ``_fits`` twin sits beside it)."""

_HSC_COLUMNS = ("HSC_g", "HSC_r", "HSC_i", "HSC_z", "HSC_y")


def _mag_to_njy(mag: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (-0.4 * (np.asarray(mag) - AB_NJY_ZEROPOINT))


@dataclass(frozen=True)
class Component:
    """One component of a galaxy: a unit-flux profile and its SED.

    Attributes
    ----------
    profile : galsim.GSObject
        Unit-flux surface brightness profile (arcsec), centred on the galaxy's position.
    wavelengths : tuple of float
        Wavelengths (nm, increasing) where the SED is given.
    magnitudes : tuple of float
        AB magnitudes of the component at those wavelengths.
    """

    profile: galsim.GSObject
    wavelengths: tuple[float, ...]
    magnitudes: tuple[float, ...]

    def flux(self, wavelength: float) -> float:
        """Flux in nJy at ``wavelength`` (nm): the SED interpolated in log wavelength."""
        mag = np.interp(np.log(wavelength), np.log(self.wavelengths), self.magnitudes)
        return float(_mag_to_njy(mag))


@dataclass(frozen=True)
class Galaxy:
    """A galaxy: components, and its truth summary.

    Attributes
    ----------
    components : tuple of Component
        Summed to form the galaxy.
    kind : {"parametric", "real"}
        How it was made.
    hlr : float
        Half-light radius in arcsec (parametric: of the summed profile at the reference
        wavelength, before shear; real: the catalogue ``flux_radius`` of the PSF-convolved
        HST image).
    e1, e2 : float
        Ellipticity ``(a - b) / (a + b)`` components in the image frame (x west, y north).
        Parametric: the applied shear; real: adaptive moments of the HST stamp, rotated and
        flipped with the galaxy.
    catalog_index : int
        Row of the COSMOS catalogue (real), or -1 (parametric).
    """

    components: tuple[Component, ...]
    kind: GalaxyType
    hlr: float
    e1: float
    e2: float
    catalog_index: int = -1

    def flux(self, wavelength: float) -> float:
        """Total flux in nJy at ``wavelength`` (nm)."""
        return sum(c.flux(wavelength) for c in self.components)

    def magnitude(self, wavelength: float) -> float:
        """AB magnitude at ``wavelength`` (nm)."""
        return AB_NJY_ZEROPOINT - 2.5 * math.log10(self.flux(wavelength))

    def profile(self, wavelength: float) -> galsim.GSObject:
        """The galaxy at ``wavelength`` (nm): profile with flux in nJy."""
        parts = [c.profile.withFlux(c.flux(wavelength)) for c in self.components]
        return parts[0] if len(parts) == 1 else galsim.Add(parts)


def _power_law_magnitude(rng: np.random.Generator, low: float, high: float, slope: float) -> float:
    """A magnitude from number counts ``dN/dm ~ 10^(slope m)`` on ``[low, high]`` (inverse CDF)."""
    a, b = 10.0 ** (slope * low), 10.0 ** (slope * high)
    return math.log10(a + rng.uniform() * (b - a)) / slope


def _composite_hlr(
    radii: tuple[float, ...], indices: tuple[float, ...], fractions: tuple[float, ...]
) -> float:
    """Half-light radius of a sum of concentric circular Sersic profiles.

    A Sersic profile of index n and half-light radius r_e encloses the flux fraction
    ``P(2n, b_n (r / r_e)^(1/n))`` within r (P the regularized lower incomplete gamma function,
    ``P(2n, b_n) = 1/2``); the radius where the weighted sum reaches 1/2 is found by Brent's
    method.
    """

    def enclosed(r: float) -> float:
        return sum(
            f * gammainc(2 * n, gammaincinv(2 * n, 0.5) * (r / re) ** (1 / n))
            for re, n, f in zip(radii, indices, fractions, strict=True)
        )

    return float(brentq(lambda r: enclosed(r) - 0.5, min(radii), max(radii)))


def draw_parametric_galaxy(
    rng: np.random.Generator,
    *,
    mag_range: tuple[float, float] = (20.0, 25.0),
    count_slope: float = 0.33,
    reference_wavelength: float = 775.0,
    hlr_at_mag20: float = 0.9,
    hlr_scatter: float = 0.3,
    max_shear: float = 0.6,
) -> Galaxy:
    """A random bulge + disk galaxy.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    mag_range : (float, float)
        Bright and faint limits of the AB magnitude at ``reference_wavelength``.
    count_slope : float
        Number counts ``dN/dm ~ 10^(count_slope m)``.
    reference_wavelength : float
        Wavelength (nm) where the magnitude and bulge fraction are defined (default: i band).
    hlr_at_mag20 : float
        Median disk half-light radius (arcsec) at magnitude 20; it shrinks by a factor
        ``10^(-0.1 (m - 20))`` for fainter galaxies.
    hlr_scatter : float
        Log-normal scatter (natural log) of the disk half-light radius.
    max_shear : float
        Cap on ``|e|``, drawn from a Rayleigh distribution of scale 0.25.

    Returns
    -------
    Galaxy
        Two components (bulge, disk); bulge fraction ~ Beta(1, 2) at the reference
        wavelength; bulge radius 0.3-0.6 of the disk's; SED slopes ``alpha`` ~ N(2, 0.3)
        (bulge) and N(0.7, 0.3) (disk) for ``f_nu ~ lambda^alpha``.
    """
    mag = _power_law_magnitude(rng, *mag_range, count_slope)
    disk_hlr = hlr_at_mag20 * 10.0 ** (-0.1 * (mag - 20.0)) * math.exp(hlr_scatter * rng.normal())
    bulge_hlr = disk_hlr * rng.uniform(0.3, 0.6)
    bulge_fraction = rng.beta(1.0, 2.0)
    e = min(rng.rayleigh(0.25), max_shear)
    angle = rng.uniform(0.0, math.pi)
    e1, e2 = e * math.cos(2 * angle), e * math.sin(2 * angle)
    alphas = (rng.normal(2.0, 0.3), rng.normal(0.7, 0.3))

    total = _mag_to_njy(mag)
    bulge = galsim.DeVaucouleurs(half_light_radius=bulge_hlr)
    disk = galsim.Exponential(half_light_radius=disk_hlr)
    hlr = _composite_hlr((bulge_hlr, disk_hlr), (4.0, 1.0), (bulge_fraction, 1 - bulge_fraction))
    # Two SED anchors at 300 nm and 1100 nm span every band; f_nu ~ lambda^alpha.
    anchors = (300.0, 1100.0)
    components = []
    for profile, fraction, alpha in zip(
        (bulge, disk), (bulge_fraction, 1.0 - bulge_fraction), alphas, strict=True
    ):
        mag_ref = AB_NJY_ZEROPOINT - 2.5 * math.log10(max(fraction * total, 1e-30))
        mags = tuple(mag_ref - 2.5 * alpha * math.log10(w / reference_wavelength) for w in anchors)
        components.append(Component(profile.shear(g1=e1, g2=e2), anchors, mags))
    return Galaxy(tuple(components), "parametric", float(hlr), e1, e2)


@dataclass(frozen=True)
class CosmosSample:
    """The COSMOS real-galaxy catalogue with the extra columns the simulation uses.

    Attributes
    ----------
    catalog : galsim.COSMOSCatalog
        The galsim catalogue (``exclusion_level="none"``).
    hsc_magnitudes : ndarray, shape (N, 5)
        HSC g, r, i, z, y AB magnitudes.
    hlr : ndarray, shape (N,)
        ``flux_radius`` in arcsec.
    shapes : ndarray, shape (N, 2)
        Adaptive-moment ellipticity (e1, e2) of each HST stamp (NaN where it fails).
    """

    catalog: galsim.COSMOSCatalog
    hsc_magnitudes: np.ndarray
    hlr: np.ndarray
    shapes: np.ndarray

    def __len__(self) -> int:
        return self.catalog.getNObjects()


def _stamp_shape(image: galsim.Image) -> tuple[float, float]:
    """Adaptive-moment (e1, e2) as reduced-shear-like ellipticity; NaN if moments fail."""
    try:
        shape = galsim.hsm.FindAdaptiveMom(image).observed_shape
    except galsim.errors.GalSimHSMError:
        return math.nan, math.nan
    return shape.g1, shape.g2


@cache
def cosmos_sample(directory: str | None = None) -> CosmosSample:
    """Load the COSMOS real-galaxy catalogue (cached per directory).

    Parameters
    ----------
    directory : str, optional
        Folder holding the catalogue files; default: the packaged ``galdeblend/data/cosmos``.

    Raises
    ------
    InputError
        The catalogue or its ``_fits`` table is missing.
    """
    folder = (
        Path(str(resources.files("galdeblend").joinpath("data", "cosmos")))
        if directory is None
        else Path(directory)
    )
    fits_table = folder / COSMOS_CATALOG.replace(".fits", "_fits.fits")
    for path in (folder / COSMOS_CATALOG, fits_table):
        if not path.is_file():
            raise InputError(f"COSMOS catalogue file {path} not found")
    catalog = galsim.COSMOSCatalog(
        file_name=COSMOS_CATALOG, dir=str(folder), exclusion_level="none"
    )
    table = Table.read(fits_table)
    scale = float(catalog.real_cat.pixel_scale[0])
    shapes = np.array(
        [_stamp_shape(catalog.real_cat.getGalImage(i)) for i in range(catalog.getNObjects())]
    )
    return CosmosSample(
        catalog=catalog,
        hsc_magnitudes=np.stack([np.asarray(table[c], dtype=float) for c in _HSC_COLUMNS], axis=1),
        hlr=np.asarray(table["flux_radius"], dtype=float) * scale,
        shapes=shapes,
    )


def draw_real_galaxy(
    rng: np.random.Generator, *, sample: CosmosSample | None = None, index: int | None = None
) -> Galaxy:
    """A real COSMOS galaxy, randomly rotated and (half the time) mirrored.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the random draws (galaxy, rotation angle, flip).
    sample : CosmosSample, optional
        Default: the packaged catalogue (:func:`cosmos_sample`).
    index : int, optional
        Catalogue row; default: drawn uniformly.

    Returns
    -------
    Galaxy
        One component: the deconvolved HST galaxy (``gal_type="real"``, no noise padding)
        with the SED of its HSC g..y magnitudes, shifted so that its F814W flux is the
        stamp's.
    """
    sample = cosmos_sample() if sample is None else sample
    n = len(sample)
    index = int(rng.integers(n)) if index is None else index
    if not 0 <= index < n:
        raise InputError(f"index must be in [0, {n}), got {index}")
    galaxy = sample.catalog.makeGalaxy(index, gal_type="real", noise_pad_size=0)
    hst = get_survey("hst")
    f814w = hst.bands[0]
    stamp_mag = f814w.zeropoint - 2.5 * math.log10(galaxy.flux)
    hsc_wavelengths = np.array([b.wavelength for b in get_survey("hsc").bands])
    hsc_mags = sample.hsc_magnitudes[index]
    shift = stamp_mag - np.interp(np.log(f814w.wavelength), np.log(hsc_wavelengths), hsc_mags)

    flip = bool(rng.integers(2))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    profile = galaxy.withFlux(1.0)
    e1, e2 = sample.shapes[index]
    if flip:
        profile = profile.transform(-1.0, 0.0, 0.0, 1.0)
        e2 = -e2
    profile = profile.rotate(angle * galsim.radians)
    rotated = complex(e1, e2) * complex(math.cos(2 * angle), math.sin(2 * angle))
    component = Component(profile, tuple(hsc_wavelengths), tuple(hsc_mags + shift))
    return Galaxy((component,), "real", float(sample.hlr[index]), rotated.real, rotated.imag, index)


def draw_galaxy(rng: np.random.Generator, galaxy_type: GalaxyType, **options: object) -> Galaxy:
    """A galaxy of the given type (``options`` go to the type's drawing function)."""
    if galaxy_type == "parametric":
        return draw_parametric_galaxy(rng, **options)
    if galaxy_type == "real":
        return draw_real_galaxy(rng, **options)
    raise InputError(f"galaxy_type must be 'parametric' or 'real', got {galaxy_type!r}")
