"""Survey presets: pixel scale, PSF, bands, sky, exposure and detector noise.

The numbers live in ``surveys.yaml`` beside this module, with their sources. They are loaded
into frozen dataclasses; :func:`get_survey` returns one preset by name (``"hst"``, ``"hsc"``,
``"lsst"``, ``"euclid"``).

Units: images are simulated in ADU of the full-depth coadd. A source of AB magnitude ``m``
gives ``10**(-0.4 (m - zeropoint)) * exposure_time`` electrons, i.e. ``/ gain`` ADU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import galsim
import yaml

from galdeblend.errors import InputError

__all__ = [
    "Band",
    "PsfModel",
    "Survey",
    "AB_NJY_ZEROPOINT",
    "available_surveys",
    "get_survey",
    "load_surveys",
]

AB_NJY_ZEROPOINT = 31.4
"""AB magnitude of 1 nJy: ``m = 31.4 - 2.5 log10(f / nJy)``."""

_SURVEY_KEYS = ("description", "pixel_scale", "gain", "read_noise", "psf", "bands")
_PSF_KEYS = ("atmosphere", "diameter", "obscuration")
_BAND_KEYS = ("wavelength", "zeropoint", "sky", "psf_fwhm", "exposure_time", "n_exposures")
_ATMOSPHERES = ("kolmogorov", "moffat", "gaussian")


@dataclass(frozen=True)
class Band:
    """One band of a survey.

    Attributes
    ----------
    name : str
        Band name as written in the FITS ``BANDn`` keywords (``"g"``, ``"F814W"``, ``"VIS"``).
    wavelength : float
        Effective wavelength in nm.
    zeropoint : float
        AB magnitude giving 1 e-/s.
    sky : float
        Sky surface brightness, AB mag/arcsec^2.
    psf_fwhm : float
        PSF FWHM, arcsec.
    exposure_time : float
        Total exposure time of the coadd, s.
    n_exposures : int
        Number of exposures (reads) in the coadd.
    """

    name: str
    wavelength: float
    zeropoint: float
    sky: float
    psf_fwhm: float
    exposure_time: float
    n_exposures: int


@dataclass(frozen=True)
class PsfModel:
    """PSF family of a survey: a seeing/jitter profile convolved with an Airy pattern.

    Attributes
    ----------
    atmosphere : {"kolmogorov", "moffat", "gaussian"}
        Profile of the seeing (ground) or jitter and charge diffusion (space) component.
    diameter : float
        Telescope diameter, m.
    obscuration : float
        Linear central obscuration, fraction of the diameter.
    beta : float or None
        Moffat index (``atmosphere="moffat"`` only).
    """

    atmosphere: Literal["kolmogorov", "moffat", "gaussian"]
    diameter: float
    obscuration: float
    beta: float | None = None


@dataclass(frozen=True)
class Survey:
    """A survey preset.

    Attributes
    ----------
    name : str
        Preset name (``"hsc"``...).
    description : str
        Telescope, instrument and survey.
    pixel_scale : float
        Arcsec per pixel.
    gain : float
        e-/ADU.
    read_noise : float
        e- rms per pixel per exposure.
    psf_model : PsfModel
        PSF family.
    bands : tuple of Band
        Bands in wavelength order.
    """

    name: str
    description: str
    pixel_scale: float
    gain: float
    read_noise: float
    psf_model: PsfModel
    bands: tuple[Band, ...]

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the bands, in order."""
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> Band:
        """The band called ``name``."""
        for band in self.bands:
            if band.name == name:
                return band
        raise InputError(f"survey {self.name!r} has no band {name!r}; it has {self.band_names}")

    def psf(self, band: Band) -> galsim.GSObject:
        """The PSF of a band: seeing/jitter (x) Airy.

        The seeing component gets the FWHM ``sqrt(psf_fwhm^2 - fwhm_airy^2)``, with
        ``fwhm_airy = 1.029 lambda / D`` (the unobscured Airy FWHM). The total FWHM is then
        within 1% of ``band.psf_fwhm`` for seeing-dominated (ground) PSFs, and 5-10% below it
        for diffraction-dominated (space) PSFs, whose obscured Airy core is narrower.
        """
        lam_over_diam = band.wavelength * 1e-9 / self.psf_model.diameter * 206264.806
        airy = galsim.Airy(lam_over_diam=lam_over_diam, obscuration=self.psf_model.obscuration)
        airy_fwhm = 1.029 * lam_over_diam
        if band.psf_fwhm <= airy_fwhm:
            raise InputError(
                f"survey {self.name!r}, band {band.name!r}: psf_fwhm {band.psf_fwhm} arcsec is "
                f"not larger than the diffraction limit {airy_fwhm:.4f} arcsec"
            )
        fwhm = math.sqrt(band.psf_fwhm**2 - airy_fwhm**2)
        if self.psf_model.atmosphere == "kolmogorov":
            seeing = galsim.Kolmogorov(fwhm=fwhm)
        elif self.psf_model.atmosphere == "moffat":
            seeing = galsim.Moffat(beta=self.psf_model.beta, fwhm=fwhm)
        else:
            seeing = galsim.Gaussian(fwhm=fwhm)
        return galsim.Convolve(seeing, airy)

    def magzero(self, band: Band) -> float:
        """AB magnitude of a source giving 1 ADU in the coadd of ``band``."""
        return band.zeropoint + 2.5 * math.log10(band.exposure_time / self.gain)

    def adu_per_njy(self, band: Band) -> float:
        """ADU in the coadd of ``band`` per nJy of source flux."""
        return 10.0 ** (-0.4 * (AB_NJY_ZEROPOINT - self.magzero(band)))

    def sky_electrons(self, band: Band) -> float:
        """Sky electrons per pixel in the coadd of ``band``."""
        rate = 10.0 ** (-0.4 * (band.sky - band.zeropoint)) * self.pixel_scale**2
        return rate * band.exposure_time

    def read_variance(self, band: Band) -> float:
        """Read-noise variance per pixel of the coadd, e-^2."""
        return band.n_exposures * self.read_noise**2


def _require(mapping: object, keys: tuple[str, ...], *, where: str) -> dict:
    """Check that a YAML node is a mapping holding ``keys``; return it."""
    if not isinstance(mapping, dict):
        raise InputError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise InputError(f"{where}: missing keys {missing} (needs {list(keys)})")
    return mapping


def _parse_survey(name: str, node: object, *, source: str) -> Survey:
    """One survey from its YAML node."""
    where = f"{source}: survey {name!r}"
    node = _require(node, _SURVEY_KEYS, where=where)
    psf = _require(node["psf"], _PSF_KEYS, where=f"{where}, psf")
    if psf["atmosphere"] not in _ATMOSPHERES:
        raise InputError(
            f"{where}, psf: atmosphere must be one of {_ATMOSPHERES}, got {psf['atmosphere']!r}"
        )
    if psf["atmosphere"] == "moffat" and "beta" not in psf:
        raise InputError(f"{where}, psf: a moffat atmosphere needs beta")
    bands = _require(node["bands"], (), where=f"{where}, bands")
    if not bands:
        raise InputError(f"{where}: no bands")
    parsed = []
    for band_name, band in bands.items():
        band = _require(band, _BAND_KEYS, where=f"{where}, band {band_name!r}")
        parsed.append(
            Band(
                name=str(band_name),
                wavelength=float(band["wavelength"]),
                zeropoint=float(band["zeropoint"]),
                sky=float(band["sky"]),
                psf_fwhm=float(band["psf_fwhm"]),
                exposure_time=float(band["exposure_time"]),
                n_exposures=int(band["n_exposures"]),
            )
        )
    return Survey(
        name=name,
        description=str(node["description"]),
        pixel_scale=float(node["pixel_scale"]),
        gain=float(node["gain"]),
        read_noise=float(node["read_noise"]),
        psf_model=PsfModel(
            atmosphere=psf["atmosphere"],
            diameter=float(psf["diameter"]),
            obscuration=float(psf["obscuration"]),
            beta=None if "beta" not in psf else float(psf["beta"]),
        ),
        bands=tuple(sorted(parsed, key=lambda b: b.wavelength)),
    )


def load_surveys(text: str | None = None, *, source: str = "surveys.yaml") -> dict[str, Survey]:
    """Parse survey presets.

    Parameters
    ----------
    text : str, optional
        YAML text; default: the packaged ``surveys.yaml``.
    source : str
        Name of the text for messages.

    Returns
    -------
    dict
        ``{name: Survey}``.

    Raises
    ------
    InputError
        A survey, PSF or band lacks a key, or an unknown PSF atmosphere.
    """
    if text is None:
        text = resources.files("galdeblend.simulate").joinpath("surveys.yaml").read_text()
    tree = yaml.safe_load(text)
    tree = _require(tree, (), where=source)
    return {str(name): _parse_survey(str(name), node, source=source) for name, node in tree.items()}


@cache
def _packaged() -> dict[str, Survey]:
    return load_surveys()


def available_surveys() -> tuple[str, ...]:
    """Names of the packaged presets."""
    return tuple(_packaged())


def get_survey(survey: str | Survey) -> Survey:
    """A packaged preset by (case-insensitive) name; a Survey is returned as is.

    Raises
    ------
    InputError
        Unknown name (the message lists the presets).
    """
    if isinstance(survey, Survey):
        return survey
    presets = _packaged()
    key = str(survey).lower()
    if key not in presets:
        raise InputError(f"unknown survey {survey!r}; the presets are {list(presets)}")
    return presets[key]
