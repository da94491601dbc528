"""Simulated scenes: blends and blank sky, rendered into one or several surveys, with truth.

A scene is a patch of sky (a centre and a square footprint of ``stamp_arcsec``) holding
k galaxies (k = 0 for blank sky). It is rendered into every requested survey on its own
pixel grid (the survey's pixel scale, a small random rotation, the same centre and
footprint) and into a common *model frame* (the finest survey pixel scale, north up, a
Gaussian PSF of 0.8 times the sharpest survey PSF FWHM, as in
:func:`galdeblend.frames.model_frame`).

Each survey image, in ADU of the survey's coadd, is

    noiseless = sum_g galaxy_g (x) PSF_band + background,
    background = constant + gradient . (u, v)     (per band; u west, v north, arcsec),
    image = (Poisson(gain noiseless + sky_e) + N(0, n_exp read_noise^2) - sky_e) / gain,
    variance = (gain noiseless + sky_e + n_exp read_noise^2) / gain^2,

where the background is the residual left by sky subtraction (galdeblend's "sky" source
kind). Bad pixels are then injected and flagged in an afw-style bit mask
(:data:`MASK_PLANES`): a bad column per band (``BAD``), cosmic-ray tracks (``CR``) and, in
some cutouts, a missing strip along one edge (``EDGE`` and ``NO_DATA``, data 0).

Files (:func:`galdeblend.io.simulation_fits.write_scene`, :func:`simulate_dataset`):

``NAME_SURVEY.fits``
    The afw layout :func:`galdeblend.io.read_cutouts` reads: ``IMAGE`` (C, H, W) float32 ADU
    with a TAN WCS and ``BAND0``... keywords (and ``MAGZP0``...: AB magnitude of 1 ADU),
    ``MASK`` int32 with ``MP_*`` plane keywords, ``VARIANCE`` float32, and ``PSF`` (C, h, w):
    each band's effective PSF (pixel included) at the survey pixel scale.
``NAME_truth.fits``
    ``GALAXIES`` table (id, kind, catalogue row, RA, Dec, half-light radius, e1, e2,
    reference magnitude, and per survey and band the flux in nJy and ADU and the 0-based
    pixel position); ``BACKGROUND`` table (survey, band, constant, gradient); ``MODEL``
    (K, C_model, H, W) noiseless galaxies in the model frame in nJy per pixel, bands
    ``SURVEY_BAND``; ``MODEL_PSF``; and per survey ``SURVEY`` (K, C, H, W) noiseless
    galaxies in ADU and ``SURVEY_BKG`` (C, H, W), both with the survey's WCS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import galsim
import numpy as np
from astropy.wcs import WCS
from tqdm import tqdm

from galdeblend.errors import InputError
from galdeblend.io.observation import Observation
from galdeblend.simulate.galaxies import Galaxy, GalaxyType, draw_galaxy
from galdeblend.simulate.surveys import AB_NJY_ZEROPOINT, Survey, get_survey

__all__ = [
    "MASK_PLANES",
    "RenderedFrame",
    "SimulatedScene",
    "simulate_scene",
    "draw_galaxy_images",
    "frame_wcs",
    "simulate_dataset",
]

MASK_PLANES: dict[str, int] = {"BAD": 0, "CR": 3, "EDGE": 4, "NO_DATA": 8}
"""afw mask plane bit numbers used in the simulated ``MASK`` HDUs."""

_FIELD_CENTRE = (150.1, 2.2)  # COSMOS field, deg
_MODEL = "model"
_PSF_BORDER_FRACTION = 5e-4  # below galdeblend.io.psf.TRUNCATION_FRACTION


@dataclass(frozen=True)
class RenderedFrame:
    """One scene drawn on one pixel grid (a survey, or the model frame).

    Attributes
    ----------
    name : str
        Survey name, or ``"model"``.
    bands : tuple of str
        Band names (model frame: ``"SURVEY_BAND"``).
    wcs : astropy.wcs.WCS
        TAN WCS of the (H, W) grid.
    psf : ndarray, shape (C, h, w)
        Effective PSF per band (pixel response included), odd-sized, centred, sum 1.
    galaxies : ndarray, shape (K, C, H, W)
        Noiseless image of each galaxy (ADU; model frame: nJy per pixel).
    positions : ndarray, shape (K, 2)
        0-based pixel position (x, y) of each galaxy centre.
    magzero : ndarray, shape (C,)
        AB magnitude of one image unit (ADU; model frame: 31.4, nJy).
    background : ndarray, shape (C, H, W)
        Smooth residual background (zero in the model frame).
    background_terms : ndarray, shape (C, 3)
        Its constant and gradient along u (west) and v (north), per arcsec.
    image, variance : ndarray, shape (C, H, W) or None
        Noisy pixels and their variance (None in the model frame).
    mask_bits : ndarray of int32, shape (C, H, W) or None
        Bit mask, planes :data:`MASK_PLANES` (None in the model frame).
    """

    name: str
    bands: tuple[str, ...]
    wcs: WCS
    psf: np.ndarray
    galaxies: np.ndarray
    positions: np.ndarray
    magzero: np.ndarray
    background: np.ndarray
    background_terms: np.ndarray
    image: np.ndarray | None = None
    variance: np.ndarray | None = None
    mask_bits: np.ndarray | None = None

    @property
    def noiseless(self) -> np.ndarray:
        """Sum of the galaxies plus the background, ``(C, H, W)``."""
        return self.galaxies.sum(axis=0) + self.background

    @property
    def mask(self) -> np.ndarray:
        """Bad pixels (any plane set), ``(C, H, W)`` bool."""
        return self.mask_bits != 0

    def observation(self, *, source: str = "<simulated>") -> Observation:
        """The noisy survey frame as an :class:`Observation` (masked pixels set to 0)."""
        if self.image is None:
            raise InputError(f"the {self.name} frame holds no noisy image")
        mask = self.mask
        return Observation(
            data=np.where(mask, 0.0, self.image),
            variance=self.variance.copy(),
            mask=mask,
            psf=self.psf.copy(),
            wcs=self.wcs.deepcopy(),
            bands=self.bands,
            source=source,
            meta={"survey": self.name, "magzero": self.magzero.tolist()},
        )


@dataclass(frozen=True)
class SimulatedScene:
    """A scene rendered into its surveys and the model frame.

    Attributes
    ----------
    kind : {"blend", "sky"}
        Galaxies present or blank sky.
    seed : int
        Seed that reproduces it.
    centre : (float, float)
        RA, Dec of the footprint centre (deg).
    stamp_arcsec : float
        Side of the square footprint.
    galaxies : tuple of Galaxy
        The K galaxies.
    offsets : ndarray, shape (K, 2)
        Galaxy positions (u west, v north) in arcsec from the centre.
    sky_coords : ndarray, shape (K, 2)
        Galaxy RA, Dec (deg).
    surveys : dict
        ``{survey name: RenderedFrame}`` with noisy images.
    model : RenderedFrame
        Noiseless galaxies in the model frame.
    """

    kind: Literal["blend", "sky"]
    seed: int
    centre: tuple[float, float]
    stamp_arcsec: float
    galaxies: tuple[Galaxy, ...]
    offsets: np.ndarray
    sky_coords: np.ndarray
    surveys: dict[str, RenderedFrame]
    model: RenderedFrame

    def observations(self) -> list[Observation]:
        """One :class:`Observation` per survey, in survey order."""
        return [f.observation(source=f"scene {self.seed} {n}") for n, f in self.surveys.items()]


# --------------------------------------------------------------------------- geometry


def _rotation(scale: float, angle_deg: float) -> np.ndarray:
    """Jacobian (2, 2) from pixel offsets (dx, dy) to sky offsets (u west, v north), arcsec."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return scale * np.array([[c, -s], [s, c]])


def frame_wcs(centre: tuple[float, float], jacobian: np.ndarray, shape: tuple[int, int]) -> WCS:
    """TAN WCS of an (H, W) grid centred on ``centre`` with the given pixel Jacobian.

    Parameters
    ----------
    centre : (float, float)
        RA, Dec (deg) at the grid centre (0-based pixel ``((W - 1) / 2, (H - 1) / 2)``).
    jacobian : ndarray, shape (2, 2)
        d(u, v)/d(x, y) in arcsec per pixel, u west and v north.
    shape : (int, int)
        (H, W).
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = list(centre)
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cd = np.diag([-1.0, 1.0]) @ jacobian / 3600.0  # RA grows to the east (-u)
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def _psf_images(psfs: Sequence[galsim.GSObject], scale: float, fwhm: float) -> np.ndarray:
    """Effective PSF images (pixel included), normalized, ``(C, h, h)``.

    The odd side h starts at about 10 times ``fwhm`` (the largest FWHM of the bands), at least
    21 pixels, and grows until the border pixels of every band hold less than
    :data:`_PSF_BORDER_FRACTION` of the flux (the Airy wings of space PSFs reach far).
    """
    side = max(int(math.ceil(10.0 * fwhm / scale)), 21)
    while True:
        side += 1 - side % 2
        images = np.stack(
            [p.drawImage(nx=side, ny=side, scale=scale, dtype=np.float64).array for p in psfs]
        )
        total = images.sum(axis=(1, 2))
        border = total - images[:, 1:-1, 1:-1].sum(axis=(1, 2))
        if np.all(border < _PSF_BORDER_FRACTION * total):
            return images / total[:, None, None]
        side = int(side * 1.3)


def draw_galaxy_images(
    galaxies: Sequence[Galaxy],
    offsets: np.ndarray,
    *,
    shape: tuple[int, int],
    jacobian: np.ndarray,
    psfs: Sequence[galsim.GSObject],
    wavelengths: Sequence[float],
    units_per_njy: Sequence[float],
) -> np.ndarray:
    """Noiseless images of galaxies on a pixel grid.

    Parameters
    ----------
    galaxies : sequence of Galaxy, length K
    offsets : ndarray, shape (K, 2)
        Positions (u west, v north) in arcsec from the grid centre.
    shape : (int, int)
        (H, W).
    jacobian : ndarray, shape (2, 2)
        d(u, v)/d(x, y), arcsec per pixel.
    psfs, wavelengths, units_per_njy : sequences of length C
        PSF, effective wavelength (nm) and image units per nJy of each band.

    Returns
    -------
    ndarray, shape (K, C, H, W)
        Each galaxy convolved with each band's PSF, integrated over pixels.
    """
    h, w = shape
    wcs = galsim.JacobianWCS(*np.asarray(jacobian, dtype=float).ravel())
    inverse = np.linalg.inv(jacobian)
    out = np.zeros((len(galaxies), len(psfs), h, w))
    for k, (galaxy, offset) in enumerate(zip(galaxies, offsets, strict=True)):
        pixel_offset = inverse @ offset
        for c, (psf, wavelength, factor) in enumerate(
            zip(psfs, wavelengths, units_per_njy, strict=True)
        ):
            profile = galsim.Convolve(galaxy.profile(wavelength) * factor, psf)
            out[k, c] = profile.drawImage(
                nx=w, ny=h, wcs=wcs, offset=tuple(pixel_offset), dtype=np.float64
            ).array
    return out


# --------------------------------------------------------------------------- scene content


def _place(
    rng: np.random.Generator, galaxies: Sequence[Galaxy], *, half_width: float
) -> np.ndarray:
    """Offsets (K, 2) in arcsec: the first galaxy near the centre, the others at 0.5-2.5 times
    the sum of their and its half-light radii from it, all within ``half_width`` of the centre.
    """
    if not galaxies:
        return np.zeros((0, 2))
    offsets = [rng.normal(0.0, 0.1 * half_width, size=2)]
    for galaxy in galaxies[1:]:
        distance = max(rng.uniform(0.5, 2.5) * (galaxies[0].hlr + galaxy.hlr), 0.3)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        offsets.append(offsets[0] + distance * np.array([math.cos(angle), math.sin(angle)]))
    return np.clip(np.array(offsets), -half_width, half_width)


def _noise_sigma(survey: Survey) -> np.ndarray:
    """Sky + read-noise standard deviation per band in ADU, ``(C,)``."""
    return np.array(
        [
            math.sqrt(survey.sky_electrons(b) + survey.read_variance(b)) / survey.gain
            for b in survey.bands
        ]
    )


def _background(
    rng: np.random.Generator,
    survey: Survey,
    jacobian: np.ndarray,
    shape: tuple[int, int],
    *,
    amplitude: float,
    stamp_arcsec: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Residual background (C, H, W) and its terms (C, 3): constant, d/du, d/dv per arcsec.

    The constant and the change across half the footprint are each ~ N(0, amplitude sigma)
    with sigma the band's sky + read noise per pixel.
    """
    sigma = _noise_sigma(survey)
    terms = rng.normal(0.0, amplitude, size=(len(sigma), 3)) * sigma[:, None]
    terms[:, 1:] /= stamp_arcsec / 2.0
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(float)
    u, v = np.tensordot(jacobian, np.stack([x - (w - 1) / 2, y - (h - 1) / 2]), axes=1)
    image = terms[:, :1, None] + terms[:, 1:2, None] * u + terms[:, 2:3, None] * v
    return image, terms


def _noisy(
    rng: np.random.Generator, survey: Survey, noiseless: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson (source + sky) and read noise on a noiseless ADU image ``(C, H, W)``.

    Returns the sky-subtracted noisy image and its variance, both ADU, ``(C, H, W)``.
    """
    image, variance = np.empty_like(noiseless), np.empty_like(noiseless)
    for c, band in enumerate(survey.bands):
        sky = survey.sky_electrons(band)
        expected = np.clip(noiseless[c] * survey.gain + sky, 0.0, None)
        read = survey.read_variance(band)
        electrons = rng.poisson(expected) + rng.normal(0.0, math.sqrt(read), size=expected.shape)
        image[c] = (electrons - sky) / survey.gain
        variance[c] = (expected + read) / survey.gain**2
    return image, variance


def _inject_defects(
    rng: np.random.Generator, image: np.ndarray, sigma: np.ndarray, *, edge_probability: float
) -> np.ndarray:
    """Add a bad column and cosmic rays to each band and maybe an empty edge strip (in place).

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        Noisy image, modified in place.
    sigma : ndarray, shape (C,)
        Background noise per band, sets the defect amplitudes.

    Returns
    -------
    ndarray of int32, shape (C, H, W)
        Bit mask with planes :data:`MASK_PLANES`.
    """
    n_bands, h, w = image.shape
    bits = np.zeros(image.shape, dtype=np.int32)
    for c in range(n_bands):
        column = rng.integers(w)
        image[c, :, column] += rng.uniform(5.0, 50.0) * sigma[c]
        bits[c, :, column] |= 1 << MASK_PLANES["BAD"]
        for _ in range(1 + rng.poisson(1.0)):
            length = rng.integers(3, 10)
            angle = rng.uniform(0.0, math.pi)
            t = np.arange(length)
            x = np.clip(np.round(rng.uniform(0, w) + t * math.cos(angle)).astype(int), 0, w - 1)
            y = np.clip(np.round(rng.uniform(0, h) + t * math.sin(angle)).astype(int), 0, h - 1)
            image[c, y, x] += rng.uniform(20.0, 200.0) * sigma[c]
            bits[c, y, x] |= 1 << MASK_PLANES["CR"]
    if rng.uniform() < edge_probability:
        width = int(rng.integers(1, max(2, min(h, w) // 10) + 1))
        strip = np.zeros((h, w), dtype=bool)
        side = rng.integers(4)
        if side == 0:
            strip[:, :width] = True
        elif side == 1:
            strip[:, -width:] = True
        elif side == 2:
            strip[:width] = True
        else:
            strip[-width:] = True
        image[:, strip] = 0.0
        bits[:, strip] |= (1 << MASK_PLANES["EDGE"]) | (1 << MASK_PLANES["NO_DATA"])
    return bits


def simulate_scene(
    surveys: Sequence[str | Survey] = ("hsc",),
    *,
    seed: int,
    blank: bool = False,
    galaxy_type: GalaxyType = "parametric",
    stamp_arcsec: float = 8.0,
    max_galaxies: int = 4,
    mean_extra_galaxies: float = 1.5,
    max_rotation_deg: float = 5.0,
    background_amplitude: float = 0.3,
    edge_probability: float = 0.3,
    galaxy_options: dict | None = None,
) -> SimulatedScene:
    """Draw one scene and render it into surveys and the model frame (numpy arrays).

    Parameters
    ----------
    surveys : sequence of str or Survey
        Survey presets (:func:`galdeblend.simulate.surveys.get_survey`) to render into.
    seed : int
        Seeds every random draw; the same seed gives the same scene.
    blank : bool, default False
        Blank sky (no galaxies, background and noise only).
    galaxy_type : {"parametric", "real"}
        Parametric bulge + disk, or real COSMOS galaxies.
    stamp_arcsec : float
        Side of the square footprint; each survey gets ``round(stamp_arcsec / pixel_scale)``
        pixels a side.
    max_galaxies : int
        Cap on K; K = min(1 + Poisson(mean_extra_galaxies), max_galaxies).
    mean_extra_galaxies : float
        Mean number of neighbours of the central galaxy before the cap.
    max_rotation_deg : float
        Each survey grid is rotated by an angle uniform in ``[-max, max]`` degrees.
    background_amplitude : float
        Residual background constant and gradient scale, in units of the band's noise.
    edge_probability : float
        Probability that a survey cutout has an empty strip along one edge.
    galaxy_options : dict, optional
        Passed to :func:`galdeblend.simulate.galaxies.draw_galaxy`.

    Returns
    -------
    SimulatedScene

    Raises
    ------
    InputError
        No survey, unknown survey, a non-positive stamp size or galaxy cap.
    """
    if not surveys:
        raise InputError("surveys: give at least one survey")
    if stamp_arcsec <= 0:
        raise InputError(f"stamp_arcsec must be > 0, got {stamp_arcsec}")
    if max_galaxies < 1:
        raise InputError(f"max_galaxies must be >= 1, got {max_galaxies}")
    presets = [get_survey(s) for s in surveys]
    names = [s.name for s in presets]
    if len(set(names)) != len(names):
        raise InputError(f"surveys: {names} lists a survey twice")
    rng = np.random.default_rng(seed)
    centre = (
        _FIELD_CENTRE[0] + rng.uniform(-0.5, 0.5),
        _FIELD_CENTRE[1] + rng.uniform(-0.5, 0.5),
    )
    n_galaxies = 0 if blank else min(1 + rng.poisson(mean_extra_galaxies), max_galaxies)
    galaxies = tuple(
        draw_galaxy(rng, galaxy_type, **(galaxy_options or {})) for _ in range(n_galaxies)
    )
    offsets = _place(rng, galaxies, half_width=0.4 * stamp_arcsec)

    rendered = {}
    for survey in presets:
        rendered[survey.name] = _render_survey(
            rng,
            survey,
            galaxies,
            offsets,
            centre=centre,
            stamp_arcsec=stamp_arcsec,
            rotation=rng.uniform(-max_rotation_deg, max_rotation_deg),
            background_amplitude=background_amplitude,
            edge_probability=edge_probability,
        )
    model = _render_model(presets, galaxies, offsets, centre=centre, stamp_arcsec=stamp_arcsec)
    sky_coords = np.array(
        model.wcs.pixel_to_world_values(model.positions[:, 0], model.positions[:, 1])
    ).T.reshape(-1, 2)
    return SimulatedScene(
        kind="sky" if blank else "blend",
        seed=seed,
        centre=centre,
        stamp_arcsec=stamp_arcsec,
        galaxies=galaxies,
        offsets=offsets,
        sky_coords=sky_coords,
        surveys=rendered,
        model=model,
    )


def _grid(scale: float, stamp_arcsec: float) -> tuple[int, int]:
    side = max(int(round(stamp_arcsec / scale)), 1)
    return side, side


def _positions(offsets: np.ndarray, jacobian: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """0-based pixel (x, y) of sky offsets ``(K, 2)`` on an (H, W) grid."""
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    return centre + offsets @ np.linalg.inv(jacobian).T


def _render_survey(
    rng: np.random.Generator,
    survey: Survey,
    galaxies: Sequence[Galaxy],
    offsets: np.ndarray,
    *,
    centre: tuple[float, float],
    stamp_arcsec: float,
    rotation: float,
    background_amplitude: float,
    edge_probability: float,
) -> RenderedFrame:
    """Noiseless, noisy and masked images of a scene in one survey."""
    shape = _grid(survey.pixel_scale, stamp_arcsec)
    jacobian = _rotation(survey.pixel_scale, rotation)
    psfs = [survey.psf(b) for b in survey.bands]
    images = draw_galaxy_images(
        galaxies,
        offsets,
        shape=shape,
        jacobian=jacobian,
        psfs=psfs,
        wavelengths=[b.wavelength for b in survey.bands],
        units_per_njy=[survey.adu_per_njy(b) for b in survey.bands],
    )
    background, terms = _background(
        rng, survey, jacobian, shape, amplitude=background_amplitude, stamp_arcsec=stamp_arcsec
    )
    noiseless = images.sum(axis=0) + background
    image, variance = _noisy(rng, survey, noiseless)
    bits = _inject_defects(rng, image, _noise_sigma(survey), edge_probability=edge_probability)
    return RenderedFrame(
        name=survey.name,
        bands=survey.band_names,
        wcs=frame_wcs(centre, jacobian, shape),
        psf=_psf_images(psfs, survey.pixel_scale, max(b.psf_fwhm for b in survey.bands)),
        galaxies=images,
        positions=_positions(offsets, jacobian, shape),
        magzero=np.array([survey.magzero(b) for b in survey.bands]),
        background=background,
        background_terms=terms,
        image=image,
        variance=variance,
        mask_bits=bits,
    )


def _render_model(
    surveys: Sequence[Survey],
    galaxies: Sequence[Galaxy],
    offsets: np.ndarray,
    *,
    centre: tuple[float, float],
    stamp_arcsec: float,
) -> RenderedFrame:
    """Noiseless galaxies (nJy per pixel) in the model frame: finest scale, north up, Gaussian
    PSF of 0.8 times the sharpest survey PSF FWHM, one band per survey band."""
    scale = min(s.pixel_scale for s in surveys)
    fwhm = 0.8 * min(b.psf_fwhm for s in surveys for b in s.bands)
    shape = _grid(scale, stamp_arcsec)
    jacobian = _rotation(scale, 0.0)
    bands = [(s, b) for s in surveys for b in s.bands]
    psf = galsim.Gaussian(fwhm=fwhm)
    images = draw_galaxy_images(
        galaxies,
        offsets,
        shape=shape,
        jacobian=jacobian,
        psfs=[psf] * len(bands),
        wavelengths=[b.wavelength for _, b in bands],
        units_per_njy=[1.0] * len(bands),
    )
    return RenderedFrame(
        name=_MODEL,
        bands=tuple(f"{s.name}_{b.name}" for s, b in bands),
        wcs=frame_wcs(centre, jacobian, shape),
        psf=np.repeat(_psf_images([psf], scale, fwhm), len(bands), axis=0),
        galaxies=images,
        positions=_positions(offsets, jacobian, shape),
        magzero=np.full(len(bands), AB_NJY_ZEROPOINT),
        background=np.zeros((len(bands), *shape)),
        background_terms=np.zeros((len(bands), 3)),
    )


def simulate_dataset(
    outdir: str | Path,
    *,
    surveys: Sequence[str] = ("hsc",),
    n_blends: int = 10,
    n_sky: int = 5,
    seed: int = 0,
    galaxy_type: GalaxyType = "parametric",
    stamp_arcsec: float = 8.0,
    max_galaxies: int = 4,
    progress: bool = True,
    **scene_options: object,
) -> dict:
    """Simulate blends and blank-sky cutouts and write them with their truth.

    Scene i is :func:`simulate_scene` with the i-th seed spawned from ``seed``
    (:class:`numpy.random.SeedSequence`), so every scene is reproducible on its own.

    Parameters
    ----------
    outdir : path
        Output folder (created if needed).
    surveys : sequence of str
        Survey presets to render every scene into (``"hsc"``, ``"hst"``, ``"lsst"``,
        ``"euclid"``).
    n_blends, n_sky : int
        Number of blend scenes (``blend_NNNN``) and blank-sky scenes (``sky_NNNN``).
    seed : int
        Master seed.
    galaxy_type : {"parametric", "real"}
    stamp_arcsec : float
        Side of every cutout's footprint.
    max_galaxies : int
        Cap on the galaxies per blend.
    progress : bool
        Show a progress bar.
    **scene_options
        Further :func:`simulate_scene` options.

    Returns
    -------
    dict
        The manifest, also written to ``outdir/manifest.json``: ``settings`` and one entry
        per scene (see :func:`galdeblend.io.simulation_fits.write_scene`).

    Raises
    ------
    InputError
        Negative counts, or an invalid scene option.
    """
    from galdeblend.io.simulation_fits import write_scene

    if n_blends < 0 or n_sky < 0:
        raise InputError(f"n_blends and n_sky must be >= 0, got {n_blends} and {n_sky}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(n_blends + n_sky)
    seeds = [int(child.generate_state(1)[0]) for child in children]
    jobs = [(f"blend_{i:04d}", False) for i in range(n_blends)]
    jobs += [(f"sky_{i:04d}", True) for i in range(n_sky)]
    scenes = []
    for (name, blank), scene_seed in tqdm(
        list(zip(jobs, seeds, strict=True)), desc="simulate", disable=not progress
    ):
        scene = simulate_scene(
            surveys,
            seed=scene_seed,
            blank=blank,
            galaxy_type=galaxy_type,
            stamp_arcsec=stamp_arcsec,
            max_galaxies=max_galaxies,
            **scene_options,
        )
        scenes.append(write_scene(scene, outdir, name))
    manifest = {
        "settings": {
            "surveys": list(surveys),
            "n_blends": n_blends,
            "n_sky": n_sky,
            "seed": seed,
            "galaxy_type": galaxy_type,
            "stamp_arcsec": stamp_arcsec,
            "max_galaxies": max_galaxies,
            **scene_options,
        },
        "surveys": {s: get_survey(s).description for s in surveys},
        "scenes": scenes,
    }
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
