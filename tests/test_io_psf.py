"""PSF loading and checking (galdeblend.io.psf) against galsim renderings and closed forms."""

from __future__ import annotations

import warnings

import galsim
import numpy as np
import pytest
from astropy.io import fits

from galdeblend.errors import DataWarning, InputError
from galdeblend.io.psf import (
    _validate_psf,
    draw_galsim_psf,
    load_psf,
    psfex_image,
    read_psf_file,
    stack_psfs,
)


def gaussian(n: int, sigma: float, *, step: float = 1.0, centre: float | None = None) -> np.ndarray:
    """Unnormalized circular Gaussian sampled on an (n, n) grid every ``step`` units."""
    c = (n - 1) / 2 if centre is None else centre
    r = (np.arange(n) - c) * step
    return np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))


def write_psfex(path, basis: np.ndarray, *, samp: float, header: dict) -> None:
    """A PSFEx-format file: PSF_DATA table with a PSF_MASK cell of shape (K, n, n)."""
    k, n, _ = basis.shape
    column = fits.Column(
        name="PSF_MASK", format=f"{k * n * n}D", dim=f"({n}, {n}, {k})", array=basis[None]
    )
    table = fits.BinTableHDU.from_columns([column], name="PSF_DATA")
    table.header.update(
        {"PSF_SAMP": samp, "PSFNAXIS": 3, "PSFAXIS1": n, "PSFAXIS2": n, "PSFAXIS3": k, **header}
    )
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def test_validate_keeps_a_centred_galsim_psf_and_normalizes_it():
    image = (
        galsim.Moffat(beta=3.5, fwhm=0.7).drawImage(nx=41, ny=41, scale=0.2, dtype=float).array
        * 3.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        psf = _validate_psf(image, source="test")
    np.testing.assert_allclose(psf, image / image.sum(), rtol=1e-12)
    assert psf.sum() == pytest.approx(1.0)


def test_even_psf_with_a_centre_is_padded_to_odd_around_its_peak():
    profile = galsim.Gaussian(sigma=0.3)
    # On a 20x20 grid galsim centres the profile at pixel (10, 10) (0-based) with this offset.
    even = profile.drawImage(nx=20, ny=20, scale=0.2, offset=(0.5, 0.5)).array
    odd = profile.drawImage(nx=21, ny=21, scale=0.2).array
    psf = _validate_psf(even, source="even")
    assert psf.shape == (21, 21)
    assert np.unravel_index(psf.argmax(), psf.shape) == (10, 10)
    np.testing.assert_allclose(psf[1:, 1:], (odd / odd.sum())[1:, 1:], rtol=1e-5, atol=1e-7)


def test_even_psf_without_a_centre_is_an_error():
    symmetric = galsim.Gaussian(sigma=0.3).drawImage(nx=20, ny=20, scale=0.2).array
    with pytest.raises(InputError, match="even-sized without a centre"):
        _validate_psf(symmetric, source="corner.fits")


def test_off_centre_peak_is_an_error():
    with pytest.raises(
        InputError, match=r"corner.fits: the PSF is off-centre: its peak is at pixel \(13, 10\)"
    ):
        _validate_psf(np.roll(gaussian(21, 1.5), 3, axis=0), source="corner.fits")


def test_peak_one_pixel_off_is_recentred_with_a_warning():
    image = np.roll(gaussian(21, 1.5), (1, -1), axis=(0, 1))
    with pytest.warns(DataWarning, match="one pixel off the centre"):
        psf = _validate_psf(image, source="shifted")
    assert psf.shape == (23, 23)
    np.testing.assert_allclose(psf[1:-1, 1:-1][:-1, 1:], (image / image.sum())[1:, :-1])
    assert np.unravel_index(psf.argmax(), psf.shape) == (11, 11)


def test_off_centre_centroid_is_an_error():
    image = gaussian(31, 1.0)
    image[3:6, 3:6] += 0.9  # a second blob holding most of the flux, far from the peak
    with pytest.raises(InputError, match="centroid"):
        _validate_psf(image, source="blob")


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((0, 0)), "empty"),
        (np.zeros((11, 11)), "all zero"),
        (np.where(gaussian(11, 1.0) > 0.5, np.nan, gaussian(11, 1.0)), "non-finite"),
        (np.ones((3, 5, 5)), "2-D"),
    ],
)
def test_unusable_psf_images_are_errors(image, match):
    with pytest.raises(InputError, match=match):
        _validate_psf(image, source="bad")


def test_truncated_psf_warns_and_a_complete_one_does_not():
    with pytest.warns(DataWarning, match="truncated"):
        _validate_psf(gaussian(11, 2.5), source="wide")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _validate_psf(gaussian(31, 2.5), source="complete")


def test_galsim_psf_is_drawn_odd_at_the_pixel_scale():
    profile = galsim.Kolmogorov(fwhm=0.6)
    image = draw_galsim_psf(profile, pixel_scale=0.168)
    assert image.shape[0] % 2 == 1 and image.shape[0] == image.shape[1]
    n = image.shape[0]
    expected = profile.drawImage(nx=n, ny=n, scale=0.168).array
    np.testing.assert_allclose(image, expected)
    psf = load_psf(profile, n_bands=2, pixel_scale=0.168, position=(1, 1), source="cut")
    np.testing.assert_allclose(psf, np.stack([expected / expected.sum()] * 2))


def test_galsim_psf_without_pixel_scale_is_an_error():
    with pytest.raises(InputError, match="needs the cutout's pixel scale"):
        load_psf(
            galsim.Gaussian(sigma=0.3), n_bands=1, pixel_scale=None, position=(1, 1), source="cut"
        )


def test_load_psf_checks_the_number_of_bands_and_the_type():
    with pytest.raises(InputError, match="lists 1 PSFs for 2 bands"):
        load_psf([gaussian(11, 1.0)], n_bands=2, pixel_scale=0.2, position=(1, 1), source="cut")
    with pytest.raises(InputError, match=r"expected \(h, w\) or \(2, h, w\)"):
        load_psf(
            np.stack([gaussian(11, 1.0)] * 3),
            n_bands=2,
            pixel_scale=0.2,
            position=(1, 1),
            source="cut",
        )
    with pytest.raises(TypeError, match="psf must be"):
        load_psf({"a": 1}, n_bands=1, pixel_scale=0.2, position=(1, 1), source="cut")


def test_per_band_psfs_of_different_sizes_are_stacked_centred():
    small, large = gaussian(11, 1.0), gaussian(15, 1.0)
    psf = load_psf([small, large], n_bands=2, pixel_scale=0.2, position=(1, 1), source="cut")
    assert psf.shape == (2, 15, 15)
    np.testing.assert_allclose(psf[0, 2:-2, 2:-2], small / small.sum())
    np.testing.assert_allclose(stack_psfs([small, large])[1], large)


@pytest.mark.parametrize("samp", [0.5, 0.8])
def test_psfex_constant_model_is_resampled_to_image_pixels(tmp_path, samp):
    sigma = 1.5  # image pixels
    basis = gaussian(41, sigma / samp)[None]  # PSFEx samples are samp image pixels apart
    write_psfex(tmp_path / "m.psf", basis, samp=samp, header={"POLNAXIS": 0})
    image = read_psf_file(tmp_path / "m.psf", position=(500.0, 500.0))
    n = 2 * int(np.floor(20 * samp)) + 1
    assert image.shape == (n, n)
    expected = gaussian(n, sigma)
    np.testing.assert_allclose(image, expected, atol=1e-9 if samp == 0.5 else 2e-3)


def test_psfex_polynomial_is_evaluated_at_the_position(tmp_path):
    g1, g2, g3 = gaussian(25, 1.0), gaussian(25, 2.0), gaussian(25, 3.0)
    basis = np.stack([g1, g2 - g1, g3 - g1])  # terms 1, x, y
    header = {
        "POLNAXIS": 2, "POLNGRP": 1, "POLNAME1": "X_IMAGE", "POLNAME2": "Y_IMAGE", "POLGRP1": 1,
        "POLGRP2": 1, "POLZERO1": 100.0, "POLSCAL1": 50.0, "POLZERO2": 20.0, "POLSCAL2": 10.0,
        "POLDEG1": 1,
    }  # fmt: skip
    write_psfex(tmp_path / "m.psf", basis, samp=1.0, header=header)
    with fits.open(tmp_path / "m.psf") as hdul:
        np.testing.assert_allclose(
            psfex_image(hdul[1], position=(150.0, 20.0), source="m"), g2
        )  # x=1, y=0
        np.testing.assert_allclose(
            psfex_image(hdul[1], position=(100.0, 30.0), source="m"), g3
        )  # x=0, y=1
        np.testing.assert_allclose(
            psfex_image(hdul[1], position=(125.0, 25.0), source="m"), 0.5 * (g2 + g3)
        )


def test_psfex_unsupported_polynomial_is_an_error(tmp_path):
    write_psfex(tmp_path / "m.psf", gaussian(11, 1.0)[None], samp=1.0, header={"POLNAXIS": 3})
    with pytest.raises(InputError, match="unsupported polynomial"):
        read_psf_file(tmp_path / "m.psf", position=(1, 1))


def test_psf_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_psf_file(tmp_path / "missing.fits", position=(1, 1))
    (tmp_path / "text.fits").write_text("not a fits file")
    with pytest.raises(InputError, match="is not a FITS file"):
        read_psf_file(tmp_path / "text.fits", position=(1, 1))


def test_real_hst_psf_is_recentred_and_hsc_psf_is_truncated(data_dir):
    hst = fits.getdata(data_dir / "hsc_hst_multires" / "PSF_HST.fits")
    with pytest.warns(DataWarning, match="one pixel off"):
        psf = _validate_psf(hst, source="PSF_HST")
    assert psf.shape == (181, 181)
    assert np.unravel_index(psf.argmax(), psf.shape) == (90, 90)
    hsc = fits.getdata(data_dir / "hsc_hst_multires" / "PSF_HSC.fits")
    with pytest.warns(DataWarning, match="truncated"):
        psf = _validate_psf(hsc[2], source="PSF_HSC")
    np.testing.assert_allclose(psf, hsc[2] / hsc[2].sum())
