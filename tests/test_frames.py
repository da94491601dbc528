"""Tests of Frame, model_frame and observation_operator on the real HSC + HST pair and
on galsim renderings."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import galsim
import numpy as np
import pytest
import torch
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from galdeblend.errors import InputError
from galdeblend.frames import Frame, model_frame, observation_operator, sharpest_fwhm
from galdeblend.io.observation import Observation
from galdeblend.operators import Convolve
from galdeblend.operators.psf_matching import measure_fwhm

DATA = Path("/work/shared/data/hsc_hst_multires")


def observation(
    data: np.ndarray, psf: np.ndarray, wcs: WCS, bands: tuple[str, ...], mask=None
) -> Observation:
    """An Observation ``(C, H, W)`` with unit variance from arrays."""
    data = np.asarray(data, dtype=np.float64)
    mask = np.zeros(data.shape, bool) if mask is None else mask
    psf = np.asarray(psf, dtype=np.float64)
    return Observation(
        data, np.ones_like(data), mask, psf / psf.sum(axis=(-2, -1), keepdims=True), wcs, bands
    )


@pytest.fixture(scope="module")
def hsc_hst() -> tuple[Observation, Observation]:
    hsc = fits.open(DATA / "Cut_HSC.fits")[0]
    hst = fits.open(DATA / "Cut_HST.fits")[0]
    return (
        observation(
            hsc.data, fits.getdata(DATA / "PSF_HSC.fits"), WCS(hsc.header).celestial, tuple("grizy")
        ),
        observation(
            hst.data[None], fits.getdata(DATA / "PSF_HST.fits")[None], WCS(hst.header), ("F814W",)
        ),
    )


def test_model_frame_of_hsc_and_hst(hsc_hst):
    hsc, hst = hsc_hst
    frame = model_frame([hsc, hst])
    assert frame.pixel_scale == pytest.approx(0.03, rel=1e-4)
    assert frame.bands == ("g", "r", "i", "z", "y", "F814W")
    C, H, W = frame.shape
    assert C == 6 and H == W and H % 2 == 1
    # It covers both footprints: every corner of each cutout falls inside the frame.
    for obs in (hsc, hst):
        _, h, w = obs.shape
        corners = obs.wcs.pixel_to_world(
            [-0.5, w - 0.5, w - 0.5, -0.5], [-0.5, -0.5, h - 0.5, h - 0.5]
        )
        x, y = frame.wcs.world_to_pixel(corners)
        assert np.all((x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5))
    # North up: +y is north, +x is west.
    c = frame.wcs.pixel_to_world([0, 0, 1], [0, 1, 0])
    assert c[1].dec > c[0].dec and c[2].ra < c[0].ra
    # Model PSF: 0.8 x the sharpest (HST) FWHM, sum 1, centred, odd.
    fwhm_hst = measure_fwhm(hst.psf[0], hst.pixel_scale)
    assert sharpest_fwhm(hst) == pytest.approx(fwhm_hst)
    assert frame.psf.shape[0] == 6 and frame.psf.shape[1] % 2 == 1
    gaussian = galsim.Gaussian(fwhm=0.8 * fwhm_hst).drawImage(
        nx=frame.psf.shape[2], ny=frame.psf.shape[1], scale=0.03
    )
    np.testing.assert_allclose(frame.psf[5], gaussian.array / gaussian.array.sum(), atol=1e-8)
    np.testing.assert_allclose(frame.psf.sum(axis=(1, 2)), 1.0)


def test_model_frame_overrides(hsc_hst):
    hsc, _ = hsc_hst
    center = SkyCoord(150.3192 * u.deg, 2.0394 * u.deg)
    frame = model_frame([hsc], center=center, size_arcsec=3.0, pixel_scale=0.05, psf_fwhm=0.4)
    assert frame.shape == (5, 61, 61)
    assert frame.pixel_scale == pytest.approx(0.05)
    x, y = frame.wcs.world_to_pixel(center)
    assert (float(x), float(y)) == pytest.approx((30.0, 30.0), abs=1e-6)
    assert measure_fwhm(frame.psf[2], 0.05) == pytest.approx(0.4, rel=0.05)


def test_model_frame_errors(hsc_hst):
    hsc, _ = hsc_hst
    with pytest.raises(InputError, match="observations is empty"):
        model_frame([])
    no_psf = Observation(
        hsc.data, hsc.variance, hsc.mask, None, hsc.wcs, hsc.bands, source="cut.fits"
    )
    with pytest.raises(InputError, match=r"observation 0 \(cut.fits\) has no PSF"):
        model_frame([no_psf])
    with pytest.raises(InputError, match="psf_fwhm must be > 0"):
        model_frame([hsc], psf_fwhm=-1.0)
    with pytest.raises(InputError, match="2 bands for 3 planes"):
        Frame((3, 5, 5), hsc.wcs, ("a", "b"))


def test_observation_operator_adjoint_and_mask(hsc_hst):
    hsc, _ = hsc_hst
    mask = np.zeros((2, 50, 50), bool)
    mask[1, 10:20, 5:9] = True
    masked = observation(hsc.data[[3, 1]], hsc.psf[[3, 1]], hsc.wcs, ("z", "r"), mask=mask)
    frame = model_frame([hsc], size_arcsec=6.0, pixel_scale=0.1)
    A = observation_operator(frame, masked, shift=(0.4, -1.3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *frame.shape, generator=g, dtype=torch.float64)
    Ax = A(x)
    assert Ax.shape == (2, 2, 50, 50)
    assert torch.all(Ax[:, 1, 10:20, 5:9] == 0) and torch.any(Ax[:, 0, 10:20, 5:9] != 0)
    y = torch.randn(Ax.shape, generator=g, dtype=torch.float64)
    lhs, rhs = float((Ax * y).sum()), float((x * A.adjoint(y)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)
    # Only the observed bands (z = 3, r = 1) of the model feed the observation.
    x_other = x.clone()
    x_other[:, [0, 2, 4]] = 0
    torch.testing.assert_close(A(x_other), Ax)


def test_observation_operator_band_error(hsc_hst):
    hsc, hst = hsc_hst
    frame = model_frame([hsc])
    with pytest.raises(InputError, match=r"band\(s\) \['F814W'\] .* not in the model frame"):
        observation_operator(frame, hst)


def test_observation_operator_matches_galsim():
    """A galaxy on the model frame, through A, equals galsim's drawing in a rotated,
    coarser observation with a broader PSF."""
    center = SkyCoord(150.0 * u.deg, 2.0 * u.deg)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [center.ra.deg + 0.1 / 3600, center.dec.deg - 0.05 / 3600]
    wcs.wcs.crpix = [15.4, 14.7]
    a = np.deg2rad(-35.0)
    wcs.wcs.cd = (
        0.2
        / 3600
        * np.diag([-1.0, 1.0])
        @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    )
    gs_wcs = galsim.AstropyWCS(wcs=wcs)
    psf = galsim.Moffat(beta=3.0, fwhm=0.7).shear(e1=0.1, e2=0.05)
    psf_image = psf.drawImage(
        galsim.ImageD(31, 31, wcs=gs_wcs.jacobian(image_pos=galsim.PositionD(15, 15)))
    ).array
    galaxy = galsim.Sersic(n=1.5, half_light_radius=0.45, flux=50.0).shear(e1=-0.3, e2=0.2)

    def draw(profile, image_wcs, shape):
        x, y = image_wcs.world_to_pixel(center)
        image = galsim.ImageD(shape[1], shape[0], wcs=galsim.AstropyWCS(wcs=image_wcs))
        return profile.drawImage(
            image=image, center=galsim.PositionD(float(x) + 1, float(y) + 1)
        ).array

    y_ref = draw(galsim.Convolve(galaxy, psf), wcs, (30, 30))
    obs = observation(y_ref[None], psf_image[None], wcs, ("i",))
    frame = model_frame([obs], center=center, size_arcsec=9.0, pixel_scale=0.04, psf_fwhm=0.4)
    x = draw(galsim.Convolve(galaxy, galsim.Gaussian(fwhm=0.4)), frame.wcs, frame.shape[1:])
    y = observation_operator(frame, obs)(torch.from_numpy(x)[None, None])[0, 0].numpy()
    assert np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref) < 0.01
    assert y.sum() == pytest.approx(y_ref.sum(), rel=5e-3)


def test_observation_operator_conserves_point_source_flux(hsc_hst):
    """A shifted model-PSF point source keeps its flux through every real HSC and HST band."""
    hsc, hst = hsc_hst
    frame = model_frame([hsc, hst])
    _, H, W = frame.shape
    delta = torch.zeros(1, *frame.shape, dtype=torch.float64)
    delta[0, :, H // 2, W // 2] = 1.0
    point = Convolve(torch.from_numpy(frame.psf))(delta)
    for obs in (hsc, hst):
        y = observation_operator(frame, obs, shift=(0.37, -0.81))(point)
        np.testing.assert_allclose(y.sum(dim=(2, 3)).numpy(), 1.0, atol=2e-3)
