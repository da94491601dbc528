"""FITS files of simulated scenes: survey cutouts (afw layout) and truth files.

Written by :func:`write_scene` for :mod:`galdeblend.simulate` (see
:mod:`galdeblend.simulate.scenes` for the layout); :func:`read_truth` reads a truth file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from galdeblend.errors import InputError
from galdeblend.simulate.scenes import MASK_PLANES, RenderedFrame, SimulatedScene
from galdeblend.simulate.surveys import AB_NJY_ZEROPOINT, get_survey

__all__ = ["write_scene", "read_truth", "SceneTruth"]


def _band_cards(header: fits.Header, bands: Sequence[str], magzero: np.ndarray) -> None:
    """BAND0..., MAGZP0... keywords."""
    for c, (band, zp) in enumerate(zip(bands, magzero, strict=True)):
        header[f"BAND{c}"] = (band, f"band of plane {c}")
        header[f"MAGZP{c}"] = (float(zp), f"AB mag of 1 image unit, plane {c}")


def _image_hdu(
    data: np.ndarray | None, name: str, frame: RenderedFrame, *, bunit: str
) -> fits.ImageHDU:
    """An image HDU with the frame's WCS and band keywords (an empty one for K = 0)."""
    hdu = fits.ImageHDU(data=None if data is None or data.size == 0 else data, name=name)
    hdu.header.update(frame.wcs.to_header())
    hdu.header["WCSAXES"] = 2
    _band_cards(hdu.header, frame.bands, frame.magzero)
    hdu.header["BUNIT"] = bunit
    hdu.header["FRAME_H"], hdu.header["FRAME_W"] = frame.galaxies.shape[-2:]
    return hdu


def _cutout_hdus(scene: SimulatedScene, frame: RenderedFrame) -> fits.HDUList:
    """The afw-layout cutout of one survey frame."""
    primary = fits.PrimaryHDU()
    primary.header["SURVEY"] = frame.name
    primary.header["SIMKIND"] = (scene.kind, "blend or sky")
    primary.header["SIMSEED"] = (scene.seed, "seed of galdeblend.simulate.simulate_scene")
    primary.header["NGAL"] = len(scene.galaxies)
    primary.header["PIXSCALE"] = get_survey(frame.name).pixel_scale
    image = _image_hdu(frame.image.astype(np.float32), "IMAGE", frame, bunit="adu")
    mask = _image_hdu(frame.mask_bits, "MASK", frame, bunit="")
    for plane, bit in MASK_PLANES.items():
        mask.header[f"HIERARCH MP_{plane}"] = bit
    variance = _image_hdu(frame.variance.astype(np.float32), "VARIANCE", frame, bunit="adu2")
    for hdu in (image, mask, variance):
        hdu.header["EXTTYPE"] = hdu.name
    psf = fits.ImageHDU(frame.psf, name="PSF")
    psf.header["PIXSCALE"] = primary.header["PIXSCALE"]
    _band_cards(psf.header, frame.bands, frame.magzero)
    return fits.HDUList([primary, image, mask, variance, psf])


def _truth_hdus(scene: SimulatedScene) -> fits.HDUList:
    """The truth file of a scene."""
    table = Table()
    n = len(scene.galaxies)
    table["id"] = np.arange(n, dtype=np.int32)
    table["kind"] = np.array([g.kind for g in scene.galaxies], dtype="U10")
    table["catalog_index"] = np.array([g.catalog_index for g in scene.galaxies], dtype=np.int32)
    table["ra"] = scene.sky_coords[:, 0]
    table["dec"] = scene.sky_coords[:, 1]
    table["u"] = scene.offsets[:, 0]
    table["v"] = scene.offsets[:, 1]
    table["hlr"] = np.array([g.hlr for g in scene.galaxies], dtype=float)
    table["e1"] = np.array([g.e1 for g in scene.galaxies], dtype=float)
    table["e2"] = np.array([g.e2 for g in scene.galaxies], dtype=float)
    for name, frame in scene.surveys.items():
        survey = get_survey(name)
        for band in survey.bands:
            njy = np.array([g.flux(band.wavelength) for g in scene.galaxies], dtype=float)
            table[f"flux_{name}_{band.name}"] = njy
            table[f"flux_adu_{name}_{band.name}"] = njy * survey.adu_per_njy(band)
            table[f"mag_{name}_{band.name}"] = AB_NJY_ZEROPOINT - 2.5 * np.log10(njy)
        table[f"x_{name}"] = frame.positions[:, 0]
        table[f"y_{name}"] = frame.positions[:, 1]
    table["x_model"] = scene.model.positions[:, 0]
    table["y_model"] = scene.model.positions[:, 1]
    galaxies = fits.BinTableHDU(table, name="GALAXIES")
    galaxies.header["FLUXUNIT"] = ("nJy", "flux_SURVEY_BAND columns; flux_adu_ in ADU")

    rows = [
        (name, band, *terms)
        for name, frame in scene.surveys.items()
        for band, terms in zip(frame.bands, frame.background_terms, strict=True)
    ]
    background = fits.BinTableHDU(
        Table(rows=rows, names=("survey", "band", "constant", "grad_u", "grad_v")),
        name="BACKGROUND",
    )
    background.header["COMMENT"] = "ADU; gradients per arcsec along u (west) and v (north)"

    primary = fits.PrimaryHDU()
    primary.header["SIMKIND"] = scene.kind
    primary.header["SIMSEED"] = scene.seed
    primary.header["NGAL"] = n
    primary.header["STAMP"] = (scene.stamp_arcsec, "footprint side, arcsec")
    primary.header["SURVEYS"] = ",".join(scene.surveys)
    primary.header["CEN_RA"] = scene.centre[0]
    primary.header["CEN_DEC"] = scene.centre[1]
    hdus = [primary, galaxies, background]
    hdus.append(_image_hdu(scene.model.galaxies, "MODEL", scene.model, bunit="nJy"))
    hdus.append(fits.ImageHDU(scene.model.psf, name="MODEL_PSF"))
    for name, frame in scene.surveys.items():
        hdus.append(_image_hdu(frame.galaxies, name.upper(), frame, bunit="adu"))
        hdus.append(_image_hdu(frame.background, f"{name.upper()}_BKG", frame, bunit="adu"))
    for hdu in hdus[3:]:
        hdu.header["NGAL"] = n
    return fits.HDUList(hdus)


def write_scene(scene: SimulatedScene, outdir: str | Path, name: str) -> dict[str, object]:
    """Write a scene's cutouts (one per survey) and its truth file.

    Parameters
    ----------
    scene : SimulatedScene
    outdir : path
        Existing folder.
    name : str
        File stem: ``NAME_SURVEY.fits`` and ``NAME_truth.fits``.

    Returns
    -------
    dict
        ``{"name", "kind", "seed", "n_galaxies", "cutouts": {survey: file}, "truth": file}``
        (file names relative to ``outdir``).
    """
    outdir = Path(outdir)
    cutouts = {}
    for survey, frame in scene.surveys.items():
        path = outdir / f"{name}_{survey}.fits"
        _cutout_hdus(scene, frame).writeto(path, overwrite=True)
        cutouts[survey] = path.name
    truth = outdir / f"{name}_truth.fits"
    _truth_hdus(scene).writeto(truth, overwrite=True)
    return {
        "name": name,
        "kind": scene.kind,
        "seed": scene.seed,
        "n_galaxies": len(scene.galaxies),
        "cutouts": cutouts,
        "truth": truth.name,
    }


@dataclass(frozen=True)
class SceneTruth:
    """The content of a truth file (:func:`read_truth`).

    Attributes
    ----------
    galaxies : astropy.table.Table
        One row per galaxy (see the module docstring for the columns).
    background_terms : astropy.table.Table
        Per survey and band: constant and gradients of the residual background (ADU).
    model : ndarray, shape (K, C_model, H, W)
        Noiseless galaxies in the model frame, nJy per pixel.
    model_wcs : astropy.wcs.WCS
    model_bands : tuple of str
    model_psf : ndarray, shape (C_model, h, w)
    survey_galaxies : dict
        ``{survey: (K, C, H, W)}`` noiseless galaxies in ADU.
    survey_background : dict
        ``{survey: (C, H, W)}`` residual background in ADU.
    survey_wcs : dict
        ``{survey: WCS}``.
    """

    galaxies: Table
    background_terms: Table
    model: np.ndarray
    model_wcs: WCS
    model_bands: tuple[str, ...]
    model_psf: np.ndarray
    survey_galaxies: dict[str, np.ndarray]
    survey_background: dict[str, np.ndarray]
    survey_wcs: dict[str, WCS]


def _truth_cube(hdu: fits.ImageHDU, n_galaxies: int) -> tuple[np.ndarray, WCS, tuple[str, ...]]:
    """A truth image HDU: its array ((0, C, H, W) when it holds no galaxy), WCS and bands."""
    header = hdu.header
    bands = []
    while f"BAND{len(bands)}" in header:
        bands.append(str(header[f"BAND{len(bands)}"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # an empty HDU (K = 0) has a WCS
        wcs = WCS(header, naxis=2)
    if hdu.data is None:
        shape = (n_galaxies, len(bands), int(header["FRAME_H"]), int(header["FRAME_W"]))
        return np.zeros(shape), wcs, tuple(bands)
    return np.asarray(hdu.data, dtype=np.float64), wcs, tuple(bands)


def read_truth(path: str | Path) -> SceneTruth:
    """Read a truth file written by :func:`write_scene`.

    Raises
    ------
    InputError
        The file is missing or lacks an HDU of the truth layout.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"truth file {path} not found")
    with fits.open(path) as hdul:
        names = {h.name for h in hdul}
        missing = {"GALAXIES", "BACKGROUND", "MODEL", "MODEL_PSF"} - names
        if missing:
            raise InputError(
                f"{path}: not a galdeblend truth file (missing HDUs {sorted(missing)})"
            )
        return _truth_from_hdus(hdul)


def scene_truth(scene: SimulatedScene) -> SceneTruth:
    """The truth of a scene as :func:`read_truth` gives it after :func:`write_scene`,
    without the file."""
    return _truth_from_hdus(_truth_hdus(scene))


def _truth_from_hdus(hdul: fits.HDUList) -> SceneTruth:
    """A :class:`SceneTruth` from the HDUs of the truth layout (:func:`_truth_hdus`)."""
    n = int(hdul[0].header["NGAL"])
    surveys = [s for s in str(hdul[0].header["SURVEYS"]).split(",") if s]
    survey_galaxies, survey_background, survey_wcs = {}, {}, {}
    for survey in surveys:
        survey_galaxies[survey], survey_wcs[survey], _ = _truth_cube(hdul[survey.upper()], n)
        survey_background[survey] = np.asarray(hdul[f"{survey.upper()}_BKG"].data, dtype=float)
    model, model_wcs, model_bands = _truth_cube(hdul["MODEL"], n)
    return SceneTruth(
        galaxies=Table.read(hdul["GALAXIES"]),
        background_terms=Table.read(hdul["BACKGROUND"]),
        model=model,
        model_wcs=model_wcs,
        model_bands=model_bands,
        model_psf=np.asarray(hdul["MODEL_PSF"].data, dtype=np.float64),
        survey_galaxies=survey_galaxies,
        survey_background=survey_background,
        survey_wcs=survey_wcs,
    )
