"""Tests of ``degrade``: real HST F814W degraded to HSC i against the real HSC pixels,
and a galsim pair with a known answer."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import galsim
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

from galdeblend.degrade import degrade
from galdeblend.errors import InputError
from galdeblend.io.observation import Observation

DATA = Path("/work/shared/data/hsc_hst_multires")


def observation(
    data: np.ndarray, psf: np.ndarray, wcs: WCS, bands: tuple[str, ...], *, source: str = "<array>"
) -> Observation:
    """An Observation ``(C, H, W)`` with unit variance and no mask."""
    data = np.asarray(data, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    return Observation(
        data,
        np.ones_like(data),
        np.zeros(data.shape, bool),
        psf / psf.sum(axis=(-2, -1), keepdims=True),
        wcs,
        bands,
        source=source,
    )


@pytest.fixture(scope="module")
def hsc_hst() -> tuple[Observation, Observation]:
    hsc = fits.open(DATA / "Cut_HSC.fits")[0]
    hst = fits.open(DATA / "Cut_HST.fits")[0]
    return (
        observation(
            hsc.data,
            fits.getdata(DATA / "PSF_HSC.fits"),
            WCS(hsc.header).celestial,
            tuple("grizy"),
            source="Cut_HSC.fits",
        ),
        observation(
            hst.data[None],
            fits.getdata(DATA / "PSF_HST.fits")[None],
            WCS(hst.header),
            ("F814W",),
            source="Cut_HST.fits",
        ),
    )


def test_degrade_hst_to_hsc_i_matches_real_hsc(hsc_hst):
    hsc, hst = hsc_hst
    result = degrade(hst, hsc, band="i")
    assert result.meta["band"] == "i"
    assert result.data.shape == (50, 50)
    assert result.wcs.wcs.compare(hsc.wcs.wcs)
    overlap = ~result.mask
    assert 1500 < overlap.sum() < 2500  # the HST cutout covers ~45 x 45 HSC pixels
    model, data = result.data[overlap], hsc.data[2][overlap]
    design = np.stack([model, np.ones_like(model)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, data, rcond=None)
    residual = data - design @ np.array([scale, offset])
    correlation = np.corrcoef(model, data)[0, 1]
    _, _, noise = sigma_clipped_stats(hsc.data[2], sigma=3.0)
    print(
        f"\nHST F814W -> HSC i: {overlap.sum()} pixels, correlation {correlation:.4f}, "
        f"flux scale {scale:.5f}, constant {offset:.4f}, residual RMS {residual.std():.4f}, "
        f"HSC noise (sigma-clipped std) {noise:.4f}, ratio {residual.std() / noise:.2f}"
    )
    assert correlation >= 0.97
    assert scale > 0
    assert residual.std() < 1.6 * noise


def test_degrade_matches_galsim():
    """A sharp 0.03"/px image of a galaxy degraded to a rotated 0.15"/px frame equals
    galsim's drawing of that galaxy with the broad PSF there."""
    center = SkyCoord(150.0 * u.deg, 2.0 * u.deg)

    def tan(scale, crpix, angle_deg):
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [center.ra.deg, center.dec.deg]
        wcs.wcs.crpix = list(crpix)
        a = np.deg2rad(angle_deg)
        wcs.wcs.cd = (
            scale
            / 3600
            * np.diag([-1.0, 1.0])
            @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        )
        return wcs

    def draw(profile, wcs, shape):
        gs_wcs = galsim.AstropyWCS(wcs=wcs)
        x, y = wcs.world_to_pixel(center)
        image = galsim.ImageD(shape[1], shape[0], wcs=gs_wcs)
        return profile.drawImage(
            image=image, center=galsim.PositionD(float(x) + 1, float(y) + 1)
        ).array

    galaxy = galsim.DeVaucouleurs(half_light_radius=0.4, flux=20.0).shear(e1=0.2, e2=0.25)
    sharp_psf, broad_psf = galsim.Gaussian(fwhm=0.1), galsim.Moffat(beta=2.5, fwhm=0.65)
    sharp_wcs, target_wcs = tan(0.03, (150.7, 150.2), 0.0), tan(0.15, (20.3, 19.6), 25.0)
    sharp = observation(
        draw(galsim.Convolve(galaxy, sharp_psf), sharp_wcs, (301, 301))[None],
        sharp_psf.drawImage(nx=31, ny=31, scale=0.03).array[None],
        sharp_wcs,
        ("F814W",),
    )
    jacobian = galsim.AstropyWCS(wcs=target_wcs).jacobian(image_pos=galsim.PositionD(20, 20))
    target = observation(
        np.zeros((2, 40, 40)),
        np.stack([broad_psf.drawImage(galsim.ImageD(41, 41, wcs=jacobian)).array] * 2),
        target_wcs,
        ("r", "i"),
    )
    result = degrade(sharp, target, band="i")
    reference = draw(galsim.Convolve(galaxy, broad_psf), target_wcs, (40, 40))
    inner = ~result.mask
    assert inner.all()
    assert np.linalg.norm(result.data - reference) / np.linalg.norm(reference) < 0.01
    assert result.data.sum() == pytest.approx(reference.sum(), rel=5e-3)


def test_degrade_errors(hsc_hst):
    hsc, hst = hsc_hst
    with pytest.raises(
        InputError,
        match=r"target observation Cut_HSC.fits has bands \['g', 'r', 'i', 'z', 'y'\]; pass band=",
    ):
        degrade(hst, hsc)
    no_psf = Observation(
        hst.data, hst.variance, hst.mask, None, hst.wcs, hst.bands, source="Cut_HST.fits"
    )
    with pytest.raises(InputError, match="sharp observation Cut_HST.fits needs a WCS and a PSF"):
        degrade(no_psf, hsc, band="i")
    with pytest.raises(
        InputError, match=r"sharp observation Cut_HSC.fits has bands .*; pass band="
    ):
        degrade(hsc, hst)
    hsc_i = observation(hsc.data[2:3], hsc.psf[2:3], hsc.wcs, ("i",))
    with pytest.raises(InputError, match="must be narrower than the observation PSF"):
        degrade(hsc_i, hst)
