"""Tests of the astronomical operators (Convolve, Resample, Shift, SelectBands) and the
PSF difference kernel: adjoints, closed forms, invariants and galsim renderings."""

from __future__ import annotations

import astropy.units as u
import galsim
import numpy as np
import pytest
import torch
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from galdeblend.errors import InputError
from galdeblend.operators import Convolve, Resample, SelectBands, Shift
from galdeblend.operators.base import LinearOperator
from galdeblend.operators.psf_matching import difference_kernel, relative_jacobian

CENTER = SkyCoord(150.1 * u.deg, 2.2 * u.deg)


def assert_adjoint(
    op: LinearOperator, in_shape: tuple[int, ...], *, seed: int = 0, rtol: float = 1e-5
):
    """Dot test ``<A x, y> = <x, A^T y>`` in float64 with random ``x`` and ``y``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(in_shape, generator=g, dtype=torch.float64)
    Ax = op.forward(x)
    y = torch.randn(Ax.shape, generator=g, dtype=torch.float64)
    ATy = op.adjoint(y)
    assert ATy.shape == x.shape
    lhs, rhs = float((Ax * y).sum()), float((x * ATy).sum())
    assert abs(lhs - rhs) <= rtol * max(abs(lhs), abs(rhs)), (lhs, rhs)


def tan_wcs(
    center: SkyCoord, scale: float, crpix: tuple[float, float], *, angle_deg: float = 0.0
) -> WCS:
    """North-up (rotated by ``angle_deg``) east-left TAN WCS, ``scale`` arcsec per pixel."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [center.ra.deg, center.dec.deg]
    wcs.wcs.crpix = list(crpix)
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    wcs.wcs.cd = scale / 3600.0 * np.diag([-1.0, 1.0]) @ rotation
    return wcs


def galsim_wcs(wcs: WCS) -> galsim.BaseWCS:
    return galsim.AstropyWCS(wcs=wcs)


def draw(
    profile: galsim.GSObject, wcs: WCS, shape: tuple[int, int], at: SkyCoord, **kwargs
) -> np.ndarray:
    """galsim drawing of ``profile`` centred on ``at`` on the grid ``(shape, wcs)``."""
    x, y = wcs.world_to_pixel(at)
    image = galsim.ImageD(shape[1], shape[0], wcs=galsim_wcs(wcs))
    center = galsim.PositionD(float(x) + 1.0, float(y) + 1.0)  # galsim pixels are 1-based
    return profile.drawImage(image=image, center=center, **kwargs).array


def centroid(image: np.ndarray) -> tuple[float, float]:
    """Flux-weighted ``(x, y)`` of an image ``(H, W)``."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return float((xx * image).sum() / image.sum()), float((yy * image).sum() / image.sum())


# --- Convolve ---------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_shape", [(5, 3), (3, 7, 5), (2, 3, 5, 5)])
def test_convolve_adjoint(kernel_shape):
    kernel = torch.randn(
        kernel_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert_adjoint(Convolve(kernel), (2, 3, 17, 12))


def test_convolve_matches_linear_convolution_and_slices_per_item():
    g = torch.Generator().manual_seed(2)
    kernel = torch.randn(3, 2, 7, 5, generator=g, dtype=torch.float64)
    x = torch.randn(3, 2, 20, 16, generator=g, dtype=torch.float64)
    op = Convolve(kernel)
    y = op(x)
    for b in range(3):
        for c in range(2):
            expected = fftconvolve(x[b, c].numpy(), kernel[b, c].numpy(), mode="same")
            np.testing.assert_allclose(y[b, c].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(op[1:](x[1:]).numpy(), y[1:].numpy(), atol=1e-12)
    np.testing.assert_allclose(op[2](x[2:3]).numpy(), y[2:3].numpy(), atol=1e-12)
    assert_adjoint(op[torch.tensor([0, 2])], (2, 2, 9, 11))


def test_full_convolution_keeps_light_beyond_the_border():
    g = torch.Generator().manual_seed(3)
    kernel = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    x = torch.randn(1, 2, 12, 9, generator=g, dtype=torch.float64)
    op = Convolve(kernel, full=True)
    y = op(x)
    assert y.shape == (1, 2, 18, 13)
    for c in range(2):
        expected = fftconvolve(x[0, c].numpy(), kernel[c].numpy(), mode="full")
        np.testing.assert_allclose(y[0, c].numpy(), expected, atol=1e-12)
    assert_adjoint(op, (2, 2, 12, 9))


def test_convolve_rejects_even_kernels():
    with pytest.raises(InputError, match="kernel sides must be odd"):
        Convolve(torch.ones(4, 5))
    with pytest.raises(InputError, match=r"\(h, w\), \(C, h, w\) or \(B, C, h, w\)"):
        Convolve(torch.ones(5))


# --- Shift and SelectBands --------------------------------------------------------------


def test_shift_adjoint_shared_and_per_item():
    assert_adjoint(Shift(1.3, -0.4), (2, 3, 15, 18))
    op = Shift(torch.tensor([0.5, -2.25, 3.7]), torch.tensor([0.1, 1.9, -0.6]))
    assert_adjoint(op, (3, 2, 16, 13))
    assert_adjoint(op[1:], (2, 2, 16, 13))


def test_shift_moves_centroid():
    image = galsim.Gaussian(sigma=2.0).drawImage(nx=41, ny=41, scale=1.0, method="no_pixel").array
    x = torch.from_numpy(image)[None, None].repeat(2, 1, 1, 1)
    dx, dy = torch.tensor([1.37, -2.6]), torch.tensor([-0.45, 3.2])
    out = Shift(dx, dy)(x).numpy()
    x0, y0 = centroid(image)
    for b in range(2):
        xb, yb = centroid(out[b, 0])
        assert xb - x0 == pytest.approx(float(dx[b]), abs=1e-3)
        assert yb - y0 == pytest.approx(float(dy[b]), abs=1e-3)
        assert out[b, 0].sum() == pytest.approx(image.sum(), rel=1e-6)


def test_shift_rejects_mismatched_shapes():
    with pytest.raises(InputError, match="dx and dy"):
        Shift(torch.zeros(3), torch.zeros(2))


def test_select_bands():
    op = SelectBands([2, 0, 2], 4)
    x = torch.arange(2 * 4 * 3 * 3, dtype=torch.float64).reshape(2, 4, 3, 3)
    np.testing.assert_array_equal(op(x).numpy(), x[:, [2, 0, 2]].numpy())
    assert_adjoint(op, (2, 4, 5, 6))
    with pytest.raises(InputError, match="out of range for 4 bands"):
        SelectBands([4], 4)


# --- Resample ---------------------------------------------------------------------------


def fine_and_coarse(angle_deg: float = 30.0):
    """A 0.03"/px model grid and a rotated, offset 0.2"/px observation grid."""
    fine = tan_wcs(CENTER, 0.03, (151.0, 151.0))
    offset = SkyCoord(CENTER.ra + 0.37 * u.arcsec, CENTER.dec - 0.21 * u.arcsec)
    coarse = tan_wcs(offset, 0.2, (13.3, 12.8), angle_deg=angle_deg)
    return fine, (301, 301), coarse, (25, 25)


@pytest.mark.parametrize("pixel_response", [True, False])
def test_resample_adjoint(pixel_response):
    fine, fine_shape, coarse, coarse_shape = fine_and_coarse()
    assert_adjoint(
        Resample(fine, fine_shape, coarse, coarse_shape, pixel_response=pixel_response),
        (2, 2, *fine_shape),
    )
    assert_adjoint(
        Resample(coarse, coarse_shape, fine, fine_shape, pixel_response=pixel_response),
        (1, 3, *coarse_shape),
    )


def test_resample_integer_offset_is_a_crop():
    big = tan_wcs(CENTER, 0.2, (20.0, 15.0))
    small = tan_wcs(CENTER, 0.2, (20.0 - 3, 15.0 + 2))  # output pixel p is input pixel p + (3, -2)
    op = Resample(big, (30, 40), small, (20, 25))
    assert op.offset == (-2, 3)
    x = torch.randn(2, 1, 30, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = op(x)
    np.testing.assert_array_equal(y[..., 2:, :].numpy(), x[..., :18, 3:28].numpy())
    assert torch.all(y[..., :2, :] == 0)
    assert_adjoint(op, (2, 1, 30, 40))


def test_resample_conserves_flux_and_centroid_under_rotation():
    fine, fine_shape, coarse, coarse_shape = fine_and_coarse(angle_deg=50.0)
    where = SkyCoord(CENTER.ra - 0.3 * u.arcsec, CENTER.dec + 0.25 * u.arcsec)
    blob = galsim.Gaussian(fwhm=0.5, flux=10.0).shear(e1=0.4, e2=0.1)
    image = draw(blob, fine, fine_shape, where, method="no_pixel")
    for pixel_response in (True, False):
        op = Resample(fine, fine_shape, coarse, coarse_shape, pixel_response=pixel_response)
        out = op(torch.from_numpy(image)[None, None])[0, 0].numpy()
        assert out.sum() == pytest.approx(image.sum(), rel=5e-3)
        expected = coarse.world_to_pixel(where)
        assert centroid(out) == pytest.approx((float(expected[0]), float(expected[1])), abs=0.01)


def test_resample_uses_sip_distortion():
    fine = tan_wcs(CENTER, 0.05, (61.0, 61.0))
    header = tan_wcs(CENTER, 0.1, (30.0, 30.0), angle_deg=-20.0).to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header.update(
        {"A_ORDER": 2, "B_ORDER": 2, "A_2_0": 2e-3, "A_1_1": -1e-3, "B_0_2": 1.5e-3, "B_1_1": 8e-4}
    )
    sip = WCS(header)
    assert sip.sip is not None
    where = SkyCoord(CENTER.ra + 1.2 * u.arcsec, CENTER.dec + 1.0 * u.arcsec)
    image = draw(galsim.Gaussian(fwhm=0.45), fine, (121, 121), where, method="no_pixel")
    out = Resample(fine, (121, 121), sip, (59, 59))(torch.from_numpy(image)[None, None])[
        0, 0
    ].numpy()
    with_sip = np.array(sip.world_to_pixel(where), dtype=float)
    without_sip = np.array(
        WCS(tan_wcs(CENTER, 0.1, (30.0, 30.0), angle_deg=-20.0).to_header()).world_to_pixel(where)
    )
    assert np.hypot(*(with_sip - without_sip)) > 0.3  # the distortion matters here
    assert centroid(out) == pytest.approx(tuple(with_sip), abs=0.03)


def test_resample_rejects_bad_shapes():
    fine, _, coarse, _ = fine_and_coarse()
    with pytest.raises(InputError, match=r"must be \(H, W\)"):
        Resample(fine, (3, 151, 151), coarse, (25, 25))


# --- difference kernel and the galsim comparison -----------------------------------------


def test_difference_kernel_reconverts_model_psf_to_obs_psf():
    model_psf = galsim.Gaussian(fwhm=0.3).drawImage(nx=41, ny=41, scale=0.03).array
    obs = galsim.Moffat(beta=3.0, fwhm=0.8).shear(e1=0.2, e2=0.0)
    obs_psf = obs.drawImage(nx=31, ny=31, scale=0.2).array  # includes the 0.2" pixel
    K = difference_kernel(obs_psf, model_psf, pixel_scale_obs=0.2, pixel_scale_model=0.03)
    assert K.shape[0] % 2 == 1 and K.sum() == pytest.approx(1.0)
    converted = fftconvolve(model_psf / model_psf.sum(), K, mode="full")
    side = converted.shape[0]
    expected = (
        galsim.Convolve(obs, galsim.Pixel(0.2))
        .drawImage(nx=side, ny=side, scale=0.03, method="no_pixel")
        .array
    )
    assert np.linalg.norm(converted - expected) / np.linalg.norm(expected) < 0.01


def test_difference_kernel_crop_keeps_the_flux_fraction():
    model_psf = galsim.Gaussian(fwhm=0.3).drawImage(nx=41, ny=41, scale=0.03).array
    obs_psf = galsim.Moffat(beta=3.0, fwhm=0.8).drawImage(nx=31, ny=31, scale=0.2).array
    kw = dict(pixel_scale_obs=0.2, pixel_scale_model=0.03)
    K = difference_kernel(obs_psf, model_psf, **kw)
    K_crop = difference_kernel(obs_psf, model_psf, flux_fraction=0.99, **kw)
    assert K_crop.shape[0] < K.shape[0] and K_crop.shape[0] % 2 == 1
    c, h = K.shape[0] // 2, K_crop.shape[0] // 2
    inner = np.abs(K[c - h : c + h + 1, c - h : c + h + 1]).sum()
    assert inner >= 0.99 * np.abs(K).sum()
    smaller = np.abs(K[c - h + 1 : c + h, c - h + 1 : c + h]).sum()
    assert smaller < 0.99 * np.abs(K).sum()


def test_difference_kernel_errors():
    narrow = galsim.Gaussian(fwhm=0.3).drawImage(nx=41, ny=41, scale=0.03).array
    wide = galsim.Gaussian(fwhm=0.2).drawImage(nx=15, ny=15, scale=0.2).array
    with pytest.raises(InputError, match="must be narrower than the observation PSF"):
        difference_kernel(wide, narrow, pixel_scale_obs=0.2, pixel_scale_model=0.03)
    with pytest.raises(InputError, match="psf_obs must be an odd-sized 2-D image"):
        difference_kernel(np.ones((4, 5)), narrow, pixel_scale_obs=0.2, pixel_scale_model=0.03)
    with pytest.raises(InputError, match="size must be a positive odd integer"):
        difference_kernel(
            galsim.Moffat(beta=3, fwhm=0.8),
            narrow,
            pixel_scale_obs=0.2,
            pixel_scale_model=0.03,
            size=10,
        )


def forward_model(angle_deg: float, obs_psf: galsim.GSObject, *, rotate_kernel: bool = True):
    """Galaxy on a 0.03"/px frame pushed to a 0.2"/px frame, and galsim's drawing there."""
    fine, fine_shape, coarse, coarse_shape = fine_and_coarse(angle_deg)
    galaxy = galsim.Exponential(half_light_radius=0.5, flux=100.0).shear(e1=0.3, e2=-0.2)
    model_psf = galsim.Gaussian(fwhm=0.3)
    x = draw(galsim.Convolve(galaxy, model_psf), fine, fine_shape, CENTER)
    model_psf_image = model_psf.drawImage(nx=41, ny=41, scale=0.03).array
    # The survey-style PSF image: in the observation's pixel axes, with its pixel.
    jac = galsim_wcs(coarse).jacobian(image_pos=galsim.PositionD(13.0, 13.0))
    obs_psf_image = obs_psf.drawImage(galsim.ImageD(31, 31, wcs=jac)).array
    K = difference_kernel(
        obs_psf_image,
        model_psf_image,
        pixel_scale_obs=0.2,
        pixel_scale_model=0.03,
        obs_jacobian=relative_jacobian(coarse, fine) if rotate_kernel else None,
    )
    A = Resample(fine, fine_shape, coarse, coarse_shape, pixel_response=False) @ Convolve(
        torch.from_numpy(K)
    )
    y = A(torch.from_numpy(x)[None, None])[0, 0].numpy()
    reference = draw(galsim.Convolve(galaxy, obs_psf), coarse, coarse_shape, CENTER)
    return y, reference


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_convolve_and_resample_match_galsim():
    y, reference = forward_model(30.0, galsim.Moffat(beta=3.5, fwhm=0.7))
    assert relative_l2(y, reference) < 0.01
    assert y.sum() == pytest.approx(reference.sum(), rel=5e-3)


def test_difference_kernel_follows_rotation_between_frames():
    elongated = galsim.Moffat(beta=3.5, fwhm=0.7).shear(e1=0.25, e2=0.0)
    y, reference = forward_model(60.0, elongated)
    unrotated, _ = forward_model(60.0, elongated, rotate_kernel=False)
    assert relative_l2(y, reference) < 0.01
    assert relative_l2(unrotated, reference) > 3 * relative_l2(y, reference)


def test_resample_pixel_response_matches_galsim_pixel():
    fine, fine_shape, coarse, coarse_shape = fine_and_coarse(30.0)
    profile = galsim.Convolve(
        galsim.Sersic(n=2.0, half_light_radius=0.4, flux=5.0).shear(e1=-0.2, e2=0.3),
        galsim.Gaussian(fwhm=0.3),
    )
    x = draw(profile, fine, fine_shape, CENTER, method="no_pixel")
    y = Resample(fine, fine_shape, coarse, coarse_shape)(torch.from_numpy(x)[None, None])[
        0, 0
    ].numpy()
    reference = draw(profile, coarse, coarse_shape, CENTER)  # galsim integrates over the 0.2" pixel
    assert relative_l2(y, reference) < 0.01
    assert y.sum() == pytest.approx(reference.sum(), rel=5e-3)
