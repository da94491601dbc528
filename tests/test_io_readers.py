"""read_cutouts and stack_bands (galdeblend.io.readers) on small FITS files and real survey data."""

from __future__ import annotations

import warnings

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS

from galdeblend.errors import DataWarning, GaldeblendWarning, InputError
from galdeblend.io import read_cutouts, stack_bands

H, W = 12, 10
RA0, DEC0 = 150.1, 2.2
SCALE = 0.2 / 3600  # degrees per pixel


def tan_header(*, cd: bool = True, sip: bool = False) -> fits.Header:
    """TAN WCS with reference pixel (5, 6) (1-based) at (RA0, DEC0), CD or PC+CDELT."""
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=5.0, CRPIX2=6.0, CRVAL1=RA0, CRVAL2=DEC0
    )
    if cd:
        header.update(CD1_1=-SCALE, CD1_2=0.0, CD2_1=0.0, CD2_2=SCALE)
    else:
        header.update(CDELT1=-SCALE, CDELT2=SCALE, PC1_1=1.0, PC2_2=1.0)
    if sip:
        header.update(
            CTYPE1="RA---TAN-SIP",
            CTYPE2="DEC--TAN-SIP",
            A_ORDER=2,
            B_ORDER=2,
            A_2_0=1e-3,
            B_0_2=-2e-3,
        )
    return header


def image(seed: int = 0, shape: tuple[int, ...] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).normal(10.0, 1.0, shape)


def assert_reference_pixel(obs) -> None:
    """0-based pixel (4, 5) is the reference point (RA0, DEC0)."""
    sky = obs.wcs.pixel_to_world(4.0, 5.0)
    assert sky.ra.deg == pytest.approx(RA0, abs=1e-9)
    assert sky.dec.deg == pytest.approx(DEC0, abs=1e-9)


def gaussian_psf(n: int = 15, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(n) - n // 2
    return np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))


def write_afw(path, data, variance, bits, *, band="i", planes=None):
    planes = {"BAD": 0, "SAT": 1, "CR": 3, "DETECTED": 5} if planes is None else planes
    mask_header = tan_header()
    for name, bit in planes.items():  # afw writes long plane names as HIERARCH cards
        mask_header[f"HIERARCH MP_{name}" if len(name) > 5 else f"MP_{name}"] = bit
    fits.HDUList(
        [
            fits.PrimaryHDU(header=fits.Header({"BAND": band})),
            fits.ImageHDU(data.astype(np.float32), tan_header(), name="IMAGE"),
            fits.ImageHDU(bits.astype(np.int32), mask_header, name="MASK"),
            fits.ImageHDU(variance.astype(np.float32), tan_header(), name="VARIANCE"),
        ]
    ).writeto(path)


# --------------------------------------------------------------------------- conventions


def test_afw_image_mask_variance_wcs_band_and_sibling_psf(tmp_path):
    data, variance = image().astype(np.float32), np.full((H, W), 0.25, np.float32)
    bits = np.zeros((H, W), np.int32)
    bits[2, 3] = 1 << 1  # SAT: bad
    bits[4, 4] = 1 << 5  # DETECTED: not bad
    bits[7, 1] = (1 << 3) | (1 << 5)  # CR: bad
    write_afw(tmp_path / "cut_i.fits", data, variance, bits)
    psf = gaussian_psf()
    fits.writeto(tmp_path / "cut_i_psf.fits", psf)
    (obs,) = read_cutouts(tmp_path / "cut_i.fits")
    assert obs.meta["convention"] == "afw" and obs.hdu == "IMAGE"
    assert obs.bands == ("i",)
    expected_mask = np.zeros((1, H, W), bool)
    expected_mask[0, 2, 3] = expected_mask[0, 7, 1] = True
    np.testing.assert_array_equal(obs.mask, expected_mask)
    np.testing.assert_array_equal(obs.data, np.where(expected_mask, 0.0, data[None]))
    np.testing.assert_array_equal(obs.variance, np.full((1, H, W), 0.25))
    np.testing.assert_allclose(obs.psf[0], psf / psf.sum())
    assert_reference_pixel(obs)
    (only_detected,) = read_cutouts(tmp_path / "cut_i.fits", bad_mask_bits=["DETECTED"])
    assert set(zip(*np.nonzero(only_detected.mask[0]), strict=True)) == {(4, 4), (7, 1)}


def test_non_finite_data_and_bad_variance_are_masked_with_a_count(tmp_path):
    data, variance = image(), np.full((H, W), 0.25)
    data[1, 1] = np.nan
    variance[2, 2] = 0.0
    variance[3, 3] = np.inf
    write_afw(tmp_path / "c.fits", data, variance, np.zeros((H, W)))
    with pytest.warns(DataWarning, match="masked 3 pixels"):
        (obs,) = read_cutouts(tmp_path / "c.fits")
    assert obs.mask.sum() == 3 and obs.data[0, 1, 1] == 0.0
    assert np.all(np.isfinite(obs.variance)) and np.all(obs.variance > 0)


def test_hst_drizzled_weight_band_and_psf_hdu(tmp_path):
    data = image()
    wht = np.full((H, W), 4.0)
    wht[:, 0] = 0.0  # no coverage
    primary = fits.PrimaryHDU(header=fits.Header({"FILTER1": "CLEAR1L", "FILTER2": "F814W"}))
    psf = gaussian_psf(11, 1.0)
    fits.HDUList(
        [
            primary,
            fits.ImageHDU(data, tan_header(cd=True), name="SCI"),
            fits.ImageHDU(wht, name="WHT"),
            fits.ImageHDU(np.ones((H, W), np.int32), name="CTX"),
            fits.ImageHDU(psf, name="PSF"),
        ]
    ).writeto(tmp_path / "drz.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero weight is "no data", not a repair
        (obs,) = read_cutouts(tmp_path / "drz.fits")
    assert obs.meta["convention"] == "hst_drz" and obs.bands == ("F814W",)
    assert obs.mask[0, :, 0].all() and not obs.mask[0, :, 1:].any()
    np.testing.assert_allclose(obs.variance[0, :, 1:], 0.25)
    np.testing.assert_allclose(obs.psf[0], psf / psf.sum())
    assert_reference_pixel(obs)


def test_hst_flt_chips_err_and_dq(tmp_path):
    hdus = [fits.PrimaryHDU(header=fits.Header({"FILTER": "F606W"}))]
    for chip in (1, 2):
        dq = np.zeros((H, W), np.int16)
        dq[chip, chip] = 4096
        hdus += [
            fits.ImageHDU(image(chip), tan_header(cd=False, sip=True), name="SCI", ver=chip),
            fits.ImageHDU(np.full((H, W), 0.5 * chip), name="ERR", ver=chip),
            fits.ImageHDU(dq, name="DQ", ver=chip),
        ]
    fits.HDUList(hdus).writeto(tmp_path / "flt.fits")
    observations = read_cutouts(tmp_path / "flt.fits")
    assert [o.hdu for o in observations] == ["SCI,1", "SCI,2"]
    for chip, obs in zip((1, 2), observations, strict=True):
        assert obs.bands == ("F606W",)
        np.testing.assert_allclose(obs.variance, (0.5 * chip) ** 2)
        assert set(zip(*np.nonzero(obs.mask[0]), strict=True)) == {(chip, chip)}
        np.testing.assert_array_equal(obs.data[0, 0], image(chip)[0])
        # SIP distortion is kept: pixels off the reference point are moved by the polynomial.
        reference = WCS(tan_header(cd=False, sip=True))
        assert obs.wcs.sip is not None
        assert obs.wcs.pixel_to_world(0, 0).separation(reference.pixel_to_world(0, 0)).arcsec < 1e-9
        assert_reference_pixel(obs)


def test_jwst_i2d_variance_is_the_sum_of_var_extensions(tmp_path):
    hdus = [
        fits.PrimaryHDU(header=fits.Header({"TELESCOP": "JWST", "FILTER": "F200W"})),
        fits.ImageHDU(image(), tan_header(), name="SCI"),
        fits.ImageHDU(np.full((H, W), 9.0), name="ERR"),
        fits.ImageHDU(np.ones((H, W)), name="WHT"),
        fits.ImageHDU(np.full((H, W), 0.1), name="VAR_POISSON"),
        fits.ImageHDU(np.full((H, W), 0.2), name="VAR_RNOISE"),
        fits.ImageHDU(np.full((H, W), 0.3), name="VAR_FLAT"),
    ]
    hdus[3].data[0, 0] = 0.0
    (obs,) = read_cutouts(fits.HDUList(hdus))
    assert obs.meta["convention"] == "jwst_i2d" and obs.bands == ("F200W",)
    np.testing.assert_allclose(obs.variance, 0.6)
    assert obs.mask[0, 0, 0] and obs.mask.sum() == 1
    (err_only,) = read_cutouts(fits.HDUList(hdus[:4]))
    np.testing.assert_allclose(err_only.variance, 81.0)
    assert_reference_pixel(err_only)


@pytest.mark.parametrize(
    "band_keys", [{"BANDS": "grz"}, {"BAND0": "g", "BAND1": "r", "BAND2": "z"}]
)
def test_legacy_cube_invvar_and_per_band_maskbits(tmp_path, band_keys):
    header = tan_header()
    header.update(band_keys)
    cube = image(shape=(3, H, W))
    invvar = np.stack([np.full((H, W), v) for v in (1.0, 2.0, 4.0)])
    maskbits = np.zeros((H, W), np.int16)
    maskbits[1, 2] = 1 << 3  # SATUR_R: bad in r only
    maskbits[3, 4] = 1 << 12  # GALAXY: not a bad pixel
    fits.HDUList(
        [
            fits.PrimaryHDU(cube, header),
            fits.ImageHDU(invvar, fits.Header({"IMAGETYP": "INVVAR"})),
            fits.ImageHDU(maskbits, fits.Header({"IMAGETYP": "MASKBITS"})),
        ]
    ).writeto(tmp_path / "ls.fits")
    (obs,) = read_cutouts(str(tmp_path / "ls.fits"))
    assert obs.meta["convention"] == "legacy" and obs.bands == ("g", "r", "z")
    np.testing.assert_allclose(obs.variance[:, 0, 0], [1.0, 0.5, 0.25])
    assert set(zip(*np.nonzero(obs.mask), strict=True)) == {(1, 1, 2)}
    np.testing.assert_array_equal(obs.data[0], cube[0])
    assert_reference_pixel(obs)


def test_plain_image_with_variance_weight_mask_and_psf_options(tmp_path):
    fits.writeto(tmp_path / "plain.fits", image(), tan_header(cd=False))
    mask = np.zeros((H, W), np.uint8)
    mask[5, 5] = 1
    fits.writeto(tmp_path / "mask.fits", mask)
    psf = gaussian_psf()
    fits.writeto(tmp_path / "psf.fits", psf)
    (obs,) = read_cutouts(
        tmp_path / "plain.fits",
        variance=2.0,
        mask=tmp_path / "mask.fits",
        psf=tmp_path / "psf.fits",
        band="r",
    )
    assert obs.meta["convention"] == "plain" and obs.bands == ("r",)
    np.testing.assert_allclose(obs.variance, 2.0)
    assert set(zip(*np.nonzero(obs.mask[0]), strict=True)) == {(5, 5)}
    np.testing.assert_allclose(obs.psf[0], psf / psf.sum())
    assert_reference_pixel(obs)
    weight = np.full((H, W), 0.5)
    weight[0, 0] = 0.0
    (weighted,) = read_cutouts(tmp_path / "plain.fits", weight=weight)
    np.testing.assert_allclose(weighted.variance[0, 1:], 2.0)
    assert weighted.mask[0, 0, 0] and weighted.mask.sum() == 1


def test_plain_cube_without_variance_estimates_it_and_warns(tmp_path):
    sigmas = np.array([1.0, 2.0])
    cube = np.random.default_rng(3).normal(0.0, 1.0, (2, 60, 60)) * sigmas[:, None, None]
    cube[:, 28:32, 28:32] += 500.0  # a bright source the clipping must ignore
    fits.writeto(tmp_path / "cube.fits", cube)
    with pytest.warns(DataWarning, match="estimated a constant background variance"):
        (obs,) = read_cutouts(tmp_path / "cube.fits", require_wcs=False, band=["a", "b"])
    np.testing.assert_allclose(obs.variance[:, 0, 0], sigmas**2, rtol=0.1)
    assert obs.bands == ("a", "b") and obs.wcs is None


def test_sibling_psfex_model_is_evaluated_at_the_parent_position(tmp_path):
    header = tan_header()
    header.update(LTV1=-139.0, LTV2=0.0)  # cutout pixel x = parent pixel x - 139
    fits.writeto(tmp_path / "field.fits", image(shape=(21, 21)), header)
    g1, g2 = gaussian_psf(25, 1.0), gaussian_psf(25, 2.0)
    basis = np.stack([g1, g2 - g1, np.zeros_like(g1)])
    column = fits.Column(
        name="PSF_MASK", format=f"{basis.size}D", dim="(25, 25, 3)", array=basis[None]
    )
    table = fits.BinTableHDU.from_columns([column], name="PSF_DATA")
    table.header.update(
        POLNAXIS=2, POLNGRP=1, POLNAME1="X_IMAGE", POLNAME2="Y_IMAGE", POLZERO1=100.0,
        POLSCAL1=50.0,
        POLZERO2=11.0, POLSCAL2=10.0, POLDEG1=1, PSF_SAMP=1.0,
    )  # fmt: skip
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "field.psf")
    with pytest.warns(DataWarning, match="estimated"):
        (obs,) = read_cutouts(tmp_path / "field.fits")
    # centre (11, 11) of the cutout is parent X = 150, i.e. x = 1, y = 0: the model is g2.
    np.testing.assert_allclose(obs.psf[0], g2 / g2.sum())
    assert obs.meta["psf"] == str(tmp_path / "field.psf")


def test_galsim_psf_option_is_drawn_at_the_cutout_pixel_scale(tmp_path):
    fits.writeto(tmp_path / "g.fits", image(), tan_header())
    profile = galsim.Gaussian(fwhm=0.8)
    (obs,) = read_cutouts(tmp_path / "g.fits", psf=profile, variance=1.0)
    n = obs.psf.shape[-1]
    expected = profile.drawImage(nx=n, ny=n, scale=0.2).array
    np.testing.assert_allclose(obs.psf[0], expected / expected.sum(), rtol=1e-5, atol=1e-8)


def test_nddata_uncertainties_and_in_memory_inputs():
    wcs = WCS(tan_header())
    data = image()
    nd_var = NDData(
        data, uncertainty=VarianceUncertainty(np.full((H, W), 3.0)), wcs=wcs, meta={"band": "z"}
    )
    nd_std = NDData(data, uncertainty=StdDevUncertainty(np.full((H, W), 3.0)), wcs=wcs)
    nd_ivar = NDData(
        data, uncertainty=InverseVariance(np.full((H, W), 4.0)), wcs=wcs, mask=data > 12.5
    )
    ccd = CCDData(
        data,
        unit="adu",
        uncertainty=StdDevUncertainty(np.ones((H, W))),
        wcs=wcs,
        meta={"FILTER": "y"},
    )
    observations = read_cutouts([nd_var, nd_std, nd_ivar, ccd])
    np.testing.assert_allclose([o.variance[0, 0, 0] for o in observations], [3.0, 9.0, 0.25, 1.0])
    assert observations[0].bands == ("z",) and observations[3].bands == ("y",)
    np.testing.assert_array_equal(observations[2].mask[0], data > 12.5)
    assert_reference_pixel(observations[0])
    (pair,) = read_cutouts((data, wcs), variance=np.full((H, W), 2.0))
    np.testing.assert_array_equal(pair.data[0], data)
    assert_reference_pixel(pair)
    two = read_cutouts(((data, wcs), (2 * data, None)), variance=1.0, require_wcs=False)
    assert two[1].wcs is None and np.array_equal(two[1].data[0], 2 * data)
    (from_hdu,) = read_cutouts(fits.ImageHDU(data, tan_header()), variance=1.0)
    np.testing.assert_array_equal(from_hdu.data[0], data)


def test_wrong_input_type_is_a_type_error():
    with pytest.raises(TypeError, match="inputs must be a FITS path"):
        read_cutouts(42)


# --------------------------------------------------------------------------- bad inputs


def test_bad_files_raise_input_errors_naming_file_and_hdu(tmp_path):
    (tmp_path / "text.fits").write_text("this is not FITS")
    with pytest.raises(InputError, match="text.fits: not a readable FITS file"):
        read_cutouts(tmp_path / "text.fits")
    with pytest.raises(InputError, match="missing.fits: file not found"):
        read_cutouts(tmp_path / "missing.fits")
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="D", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    with pytest.raises(InputError, match="table.fits: no image HDU"):
        read_cutouts(tmp_path / "table.fits")
    write_afw(tmp_path / "shape.fits", image(), np.ones((H + 1, W)), np.zeros((H, W)))
    with pytest.raises(InputError, match=r"shape.fits: HDU VARIANCE has shape \(13, 10\)"):
        read_cutouts(tmp_path / "shape.fits")
    fits.writeto(tmp_path / "nowcs.fits", image())
    with pytest.raises(InputError, match="nowcs.fits, HDU PRIMARY: no celestial WCS"):
        read_cutouts(tmp_path / "nowcs.fits", variance=1.0)
    fits.writeto(tmp_path / "nan.fits", np.full((H, W), np.nan), tan_header())
    with (
        pytest.raises(InputError, match="nan.fits, HDU PRIMARY: every pixel is masked"),
        pytest.warns(DataWarning),
    ):
        read_cutouts(tmp_path / "nan.fits", variance=1.0)


def test_bad_options_raise_input_errors(tmp_path):
    fits.writeto(tmp_path / "p.fits", image(), tan_header())
    with pytest.raises(InputError, match=r"variance= has shape \(3, 3\)"):
        read_cutouts(tmp_path / "p.fits", variance=np.ones((3, 3)))
    with pytest.raises(InputError, match="band= gives 2 names"):
        read_cutouts(tmp_path / "p.fits", variance=1.0, band="g,r")
    with pytest.raises(InputError, match="not both"):
        read_cutouts(tmp_path / "p.fits", variance=1.0, weight=1.0)
    off = np.roll(gaussian_psf(), 4, axis=1)
    with pytest.raises(InputError, match="p.fits, HDU PRIMARY: PSF array .* off-centre"):
        read_cutouts(tmp_path / "p.fits", variance=1.0, psf=off)
    with pytest.raises(InputError, match="on_error"):
        read_cutouts(tmp_path / "p.fits", on_error="ignore")


def test_skip_reports_bad_files_and_keeps_the_good_ones(tmp_path):
    fits.writeto(tmp_path / "good.fits", image(), tan_header())
    fits.writeto(tmp_path / "nowcs.fits", image())
    failures = []
    with pytest.warns(GaldeblendWarning, match="skipped .*nowcs.fits: .*no celestial WCS"):
        observations = read_cutouts(
            [tmp_path / "nowcs.fits", tmp_path / "good.fits"],
            variance=1.0,
            on_error="skip",
            failures=failures,
        )
    assert [o.source for o in observations] == [str(tmp_path / "good.fits")]
    assert len(failures) == 1 and failures[0][0] == str(tmp_path / "nowcs.fits")
    assert isinstance(failures[0][1], InputError)


def test_stack_bands_checks_grids_and_bands():
    wcs = WCS(tan_header())
    g, r = read_cutouts([(image(1), wcs), (image(2), wcs)], variance=1.0, band="x")
    with pytest.raises(InputError, match="appear more than once"):
        stack_bands([g, r])
    (shifted,) = read_cutouts(
        (image(2), WCS(tan_header()).slice((slice(1, None), slice(None)))), variance=1.0, band="r"
    )
    with pytest.raises(InputError, match="WCS of .* differs"):
        stack_bands([g, shifted])
    (small,) = read_cutouts((image(2, (H - 1, W)), wcs), variance=1.0, band="r")
    with pytest.raises(InputError, match="has grid"):
        stack_bands([g, small])


# --------------------------------------------------------------------------- real data


def test_real_hsc_afw_files_read_and_stack(data_dir):
    folder = data_dir / "hsc_blends"
    reference = np.load(folder / "hsc_cosmos_35.npz", allow_pickle=False)
    observations = read_cutouts([folder / f"hsc_cosmos_35_{b}.fits" for b in "grizy"])
    assert len(observations) == 5 and all(o.shape == (1, 58, 48) for o in observations)
    i_band = observations[2]
    assert i_band.bands == ("i",) and i_band.psf.shape == (1, 43, 43)
    assert i_band.meta["psf"].endswith("hsc_cosmos_35_i_psf.fits")
    np.testing.assert_array_equal(i_band.variance[0], reference["variance"][2])
    assert i_band.pixel_scale == pytest.approx(0.168, rel=1e-6)
    stacked = stack_bands(observations)
    assert stacked.shape == (5, 58, 48) and stacked.bands == tuple("grizy")
    np.testing.assert_array_equal(stacked.data, reference["images"])
    np.testing.assert_array_equal(stacked.variance, reference["variance"])
    np.testing.assert_allclose(stacked.psf, reference["psfs"], atol=1e-12)
    assert not stacked.mask.any()


@pytest.mark.parametrize("band", ["g,r,i,z,y", ["g", "r", "i", "z", "y"]])
def test_real_hsc_cube_with_truncated_psf(data_dir, band):
    folder = data_dir / "hsc_hst_multires"
    with pytest.warns(DataWarning) as record:
        (obs,) = read_cutouts(folder / "Cut_HSC.fits", band=band, psf=folder / "PSF_HSC.fits")
    messages = [str(w.message) for w in record]
    assert sum("truncated" in m for m in messages) == 5
    assert any("estimated a constant background variance" in m for m in messages)
    assert obs.shape == (5, 50, 50) and obs.bands == tuple("grizy") and obs.psf.shape == (5, 31, 31)
    np.testing.assert_allclose(obs.psf.sum(axis=(1, 2)), 1.0)
    centre = obs.wcs.pixel_to_world(24.5, 24.5)
    assert centre.ra.deg == pytest.approx(150.31918, abs=2e-4)
    assert centre.dec.deg == pytest.approx(2.03940, abs=2e-4)


def test_real_hst_cutout_reads_with_estimated_variance(data_dir):
    folder = data_dir / "hsc_hst_multires"
    with pytest.warns(DataWarning) as record:
        (obs,) = read_cutouts(folder / "Cut_HST.fits", psf=folder / "PSF_HST.fits")
    messages = " | ".join(str(w.message) for w in record)
    assert "estimated a constant background variance" in messages and "one pixel off" in messages
    assert obs.shape == (1, 250, 250) and obs.pixel_scale == pytest.approx(0.03, rel=1e-5)
    background = np.asarray(fits.getdata(folder / "Cut_HST.fits"), float)[:20, :20]
    assert obs.variance[0, 0, 0] == pytest.approx(background.var(), rel=0.3)
    assert obs.psf.shape == (1, 181, 181)
