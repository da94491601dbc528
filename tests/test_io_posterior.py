"""Posterior FITS files: round trip, WCS, catalogue, atomic writing, errors."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, Sip
from astropy.wcs import validate as wcs_validate

import galdeblend
from galdeblend.errors import InputError
from galdeblend.frames import Frame
from galdeblend.io import read_posterior, write_posterior
from galdeblend.io.observation import Observation
from galdeblend.results import DeblendResult, InstanceResult

CENTER = SkyCoord(150.1, 2.2, unit="deg")


def _tan_wcs(
    scale_arcsec: float, shape: tuple[int, int], rotation_deg: float, *, sip: bool = False
) -> WCS:
    wcs = WCS(naxis=2)
    suffix = "-SIP" if sip else ""
    wcs.wcs.ctype = ["RA---TAN" + suffix, "DEC--TAN" + suffix]
    wcs.wcs.crval = [CENTER.ra.deg, CENTER.dec.deg]
    wcs.wcs.crpix = [(shape[1] + 1) / 2 + 0.3, (shape[0] + 1) / 2 - 0.2]
    theta = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    wcs.wcs.cd = rot @ np.diag([-scale_arcsec / 3600, scale_arcsec / 3600])
    wcs.wcs.radesys = "ICRS"
    if sip:
        a = np.zeros((3, 3))
        b = np.zeros((3, 3))
        a[2, 0], b[0, 2] = 2e-4, -3e-4
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    return wcs


def _psf(n_bands: int, fwhm_pixels: float, side: int = 11) -> np.ndarray:
    y, x = np.mgrid[:side, :side] - side // 2
    image = np.exp(-(x**2 + y**2) / (2 * (fwhm_pixels / 2.355) ** 2))
    return np.repeat((image / image.sum())[None], n_bands, axis=0)


def _observation(rng, shape, bands, wcs, *, source, hdu) -> Observation:
    mask = rng.random(shape) < 0.05
    data = np.where(mask, 0.0, rng.normal(size=shape))
    return Observation(
        data=data,
        variance=rng.uniform(0.5, 2.0, size=shape),
        mask=mask,
        psf=_psf(shape[0], 2.5),
        wcs=wcs,
        bands=bands,
        source=source,
        hdu=hdu,
    )


def _result(*, sip: bool = False, seed: int = 0) -> DeblendResult:
    """2 observations (g, r at 0.2"/px; i at 0.5"/px rotated), 2 galaxies, 1 sky instance."""
    rng = np.random.default_rng(seed)
    observations = [
        _observation(
            rng,
            (2, 24, 26),
            ("g", "r"),
            _tan_wcs(0.2, (24, 26), 0.0),
            source="cut_gr.fits",
            hdu="IMAGE",
        ),
        _observation(
            rng,
            (1, 12, 11),
            ("i",),
            _tan_wcs(0.5, (12, 11), 30.0, sip=sip),
            source="/data/a directory with a rather long name/" + "x" * 60 + "/cut_i.fits",
            hdu=1,
        ),
    ]
    model_wcs = _tan_wcs(0.2, (15, 17), 0.0)
    model = Frame(shape=(3, 15, 17), wcs=model_wcs, bands=("g", "r", "i"), psf=_psf(3, 1.5, side=9))
    galaxies = [
        InstanceResult(
            id=k + 1,
            kind="galaxy",
            frame=model,
            samples=rng.normal(size=(4, 3, 15, 17)).astype(np.float32),
            center=SkyCoord(150.1 + 1e-4 * k, 2.2 - 2e-4 * k, unit="deg"),
            log_prob=-123.5 * (k + 1),
        )
        for k in range(2)
    ]
    sky_frame = Frame(shape=(1, 12, 11), wcs=observations[1].wcs, bands=("i",))
    sky = InstanceResult(
        id=7, kind="sky", frame=sky_frame, samples=rng.normal(size=(4, 1, 12, 11)), observation=1
    )
    provenance = {
        "version": galdeblend.__version__,
        "priors": {"galaxy": "galaxy-prior-v3:sha256:" + "ab" * 32, "sky": "gaussian-sky"},
        "sampler": {"name": "ddim", "steps": 64, "eta": 0.5, "schedule": [0.1, 1.0]},
        "seed": 1234,
        "inputs": [o.source for o in observations],
        "tolerance": float("nan"),
    }
    models = [rng.normal(size=o.shape) for o in observations]
    return DeblendResult(
        observations=observations, instances=[*galaxies, sky], models=models, provenance=provenance
    )


def _assert_same_wcs(a: WCS, b: WCS, shape: tuple[int, int]) -> None:
    y, x = np.mgrid[: shape[0], : shape[1]]
    sky_a = a.pixel_to_world(x.ravel(), y.ravel())
    sky_b = b.pixel_to_world(x.ravel(), y.ravel())
    assert np.max(sky_a.separation(sky_b).arcsec) < 1e-9


def _assert_same_result(read: DeblendResult, written: DeblendResult) -> None:
    assert len(read.observations) == len(written.observations)
    for got, want in zip(read.observations, written.observations, strict=True):
        for name in ("data", "variance", "mask", "psf"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert got.mask.dtype == bool
        assert (got.bands, got.source, got.hdu) == (want.bands, want.source, want.hdu)
        _assert_same_wcs(got.wcs, want.wcs, want.shape[1:])
    for got, want in zip(read.models, written.models, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [i.id for i in read.instances] == [i.id for i in written.instances]
    for got, want in zip(read.instances, written.instances, strict=True):
        assert got.samples.dtype == want.samples.dtype
        np.testing.assert_array_equal(got.samples, want.samples)
        assert (got.kind, got.observation, got.frame.shape, got.frame.bands) == (
            want.kind,
            want.observation,
            want.frame.shape,
            want.frame.bands,
        )
        if want.frame.psf is None:
            assert got.frame.psf is None
        else:
            np.testing.assert_array_equal(got.frame.psf, want.frame.psf)
        _assert_same_wcs(got.frame.wcs, want.frame.wcs, want.frame.shape[1:])
        np.testing.assert_equal(got.log_prob, want.log_prob)
        if want.center is None:
            assert got.center is None
        else:
            assert got.center.separation(want.center).arcsec < 1e-9
    for got, want in zip(read.residuals(), written.residuals(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_round_trip(tmp_path):
    result = _result()
    path = write_posterior(result, tmp_path / "post.fits")
    assert path == tmp_path / "post.fits"
    read = read_posterior(path)
    _assert_same_result(read, result)
    expected = dict(result.provenance, tolerance=read.provenance["tolerance"])
    assert read.provenance == expected and np.isnan(read.provenance["tolerance"])


def test_images_and_table(tmp_path):
    result = _result()
    path = write_posterior(result, tmp_path / "post.fits")
    residuals = result.residuals()
    with fits.open(path) as hdul:
        for instance in result.instances:
            np.testing.assert_allclose(
                hdul[f"SRC{instance.id}_MEAN"].data, instance.mean, rtol=1e-6
            )
            np.testing.assert_allclose(hdul[f"SRC{instance.id}_STD"].data, instance.std, rtol=1e-6)
            samples = hdul[f"SRC{instance.id}_SAMPLES"].header
            assert (samples["NAXIS"], samples["CTYPE3"], samples["CTYPE4"]) == (4, "BAND", "SAMPLE")
            assert samples["KIND"] == instance.kind and samples["SRCID"] == instance.id
        assert hdul["SRC7_MEAN"].header["OBSIDX"] == 1 and "RA" not in hdul["SRC7_MEAN"].header
        assert hdul["SRC2_MEAN"].header["DEC"] == pytest.approx(2.2 - 2e-4)
        for i, obs in enumerate(result.observations):
            np.testing.assert_array_equal(hdul[f"OBS{i}_RESIDUAL"].data, residuals[i])
            np.testing.assert_array_equal(hdul[f"OBS{i}_MASK"].data, obs.mask.astype(np.uint8))
            assert hdul[f"OBS{i}_DATA"].header["SOURCE"] == obs.source
        primary = hdul[0].header
        assert primary["GDBVERS"] == galdeblend.__version__
        assert (primary["NSRC"], primary["NOBS"], primary["INPUT1"]) == (
            3,
            2,
            result.observations[1].source,
        )
        assert primary["GDB PRIORS GALAXY"] == result.provenance["priors"]["galaxy"]
        assert (primary["GDB SAMPLER STEPS"], primary["GDB SEED"]) == (64, 1234)
        assert "GDB TOLERANCE" not in primary  # NaN: in PROVJSON only
        written = datetime.fromisoformat(primary["DATE"]).replace(tzinfo=timezone.utc)
        assert abs((datetime.now(timezone.utc) - written).total_seconds()) < 120
    table = Table.read(path, hdu="SOURCES", mask_invalid=False)
    assert list(table["ID"]) == [1, 2, 7]
    assert list(table["KIND"]) == ["galaxy", "galaxy", "sky"]
    assert list(table["OBSIDX"]) == [-1, -1, 1]
    assert table["RA"][1] == pytest.approx(150.1001) and np.isnan(table["DEC"][2])
    for row, instance in enumerate(result.instances):
        mean, std = instance.flux()
        for c, band in enumerate(instance.frame.bands):
            assert table[f"FLUX_{band}"][row] == pytest.approx(mean[c], rel=1e-6)
            assert table[f"FLUX_ERR_{band}"][row] == pytest.approx(std[c], rel=1e-6)
        np.testing.assert_equal(table["LOG_PROB"][row], instance.log_prob)
    assert np.isnan(table["FLUX_g"][2]) and np.isnan(table["FLUX_ERR_r"][2])
    # a galaxy's flux is the sum of its pixels: check one against the samples directly
    assert table["FLUX_i"][0] == pytest.approx(
        result.instances[0].samples[:, 2].sum(axis=(1, 2)).mean(), rel=1e-5
    )


def test_mean_wcs_maps_pixels_to_sky(tmp_path):
    result = _result()
    path = write_posterior(result, tmp_path / "post.fits")
    galaxy = result.instances[1]
    with fits.open(path) as hdul:
        mean_wcs = WCS(hdul["SRC2_MEAN"].header)
        obs_wcs = WCS(hdul["OBS1_MODEL"].header)
        samples_wcs = WCS(hdul["SRC2_SAMPLES"].header)
    # pixel (x=3, y=11) of band plane 2 (0-based; the 'i' band)
    ra, dec, band = mean_wcs.wcs_pix2world([[3.0, 11.0, 2.0]], 0)[0]
    expected = galaxy.frame.wcs.pixel_to_world(3.0, 11.0)
    assert SkyCoord(ra, dec, unit="deg").separation(expected).arcsec < 1e-9
    assert band == 3 and galaxy.frame.bands[int(band) - 1] == "i"
    ra, dec, band, sample = samples_wcs.wcs_pix2world([[3.0, 11.0, 2.0, 3.0]], 0)[0]
    assert SkyCoord(ra, dec, unit="deg").separation(expected).arcsec < 1e-9
    assert (band, sample) == (3, 4)
    ra, dec, _ = obs_wcs.wcs_pix2world([[5.0, 7.0, 0.0]], 0)[0]
    expected = result.observations[1].wcs.pixel_to_world(5.0, 7.0)
    assert SkyCoord(ra, dec, unit="deg").separation(expected).arcsec < 1e-9


@pytest.mark.parametrize("sip", [False, True])
def test_every_header_validates(tmp_path, sip):
    path = write_posterior(_result(sip=sip), tmp_path / "post.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(path, checksum=True) as hdul:
            names = [hdu.name for hdu in hdul]
            assert hdul[0].data is None and not any(
                k.startswith(("WCSAXES", "CTYPE")) for k in hdul[0].header
            )
            for hdu in hdul[1:]:
                WCS(hdu.header)
    assert ("OBS1_WCS" in names) == sip and ("SRC7_WCS" in names) == sip
    report = wcs_validate(str(path))
    assert len(report) == len(names)
    assert all(len(messages) == 0 for hdu_report in report for messages in hdu_report)


@pytest.mark.parametrize("length", [30, 60, 200])
def test_long_input_paths_are_written_whole_without_warnings(tmp_path, length):
    result = _result()
    source = "/data/" + "d" * (length - len("/data/cut.fits")) + "/cut.fits"
    result.observations[0].source = source
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_posterior(result, tmp_path / "post.fits")
        with fits.open(path) as hdul:
            assert hdul[0].header["INPUT0"] == source
            assert hdul["OBS0_DATA"].header["SOURCE"] == source
            # the comment goes where the path fits one card but not with it
            has_comment = bool(hdul[0].header.comments["INPUT0"])
    assert has_comment == (length != 60)
    assert read_posterior(path).observations[0].source == source


def test_sip_observation_round_trip(tmp_path):
    result = _result(sip=True)
    read = read_posterior(write_posterior(result, tmp_path / "post.fits"))
    assert read.observations[1].wcs.sip is not None
    assert read.instances[2].frame.wcs.sip is not None
    _assert_same_result(read, result)
    # the SIP terms matter: the approximate TAN core in the cube header differs from the exact WCS
    with fits.open(tmp_path / "post.fits") as hdul:
        core = WCS(hdul["OBS1_DATA"].header).celestial
        assert hdul["OBS1_DATA"].header["WCSSIP"] == "OBS1_WCS"
    exact = result.observations[1].wcs
    assert core.pixel_to_world(0, 0).separation(exact.pixel_to_world(0, 0)).arcsec > 1e-3


def test_overwrite(tmp_path):
    path = tmp_path / "post.fits"
    write_posterior(_result(seed=0), path)
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"post\.fits exists; pass overwrite=True"):
        write_posterior(_result(seed=1), path)
    assert path.read_bytes() == before
    second = _result(seed=1)
    write_posterior(second, path, overwrite=True)
    _assert_same_result(read_posterior(path), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.fits"]


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, existing):
    path = tmp_path / "post.fits"
    if existing:
        write_posterior(_result(seed=0), path)
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    original = fits.HDUList.writeto
    partial = []

    def write_then_fail(self, name, *args, **kwargs):
        original(self, name, *args, **kwargs)  # the temporary file is complete on disk
        partial.append(name)
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_posterior(_result(seed=1), path, overwrite=True)
    assert len(partial) == 1 and partial[0].parent == tmp_path and partial[0] != path
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


def test_write_errors(tmp_path):
    result = _result()
    with pytest.raises(InputError, match=r"post\.fits: directory .*missing does not exist"):
        write_posterior(result, tmp_path / "missing" / "post.fits")
    bad = DeblendResult(result.observations, result.instances, result.models[:1], result.provenance)
    with pytest.raises(InputError, match="1 models for 2 observations"):
        write_posterior(bad, tmp_path / "post.fits")
    twins = DeblendResult(result.observations, [result.instances[0]] * 2, result.models)
    with pytest.raises(InputError, match=r"instance ids must be unique, got \[1, 1\]"):
        write_posterior(twins, tmp_path / "post.fits")
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path):
    with pytest.raises(InputError, match="nothing.fits does not exist"):
        read_posterior(tmp_path / "nothing.fits")
    text = tmp_path / "text.fits"
    text.write_text("not a FITS file\n" * 300)
    with pytest.raises(InputError, match="text.fits is not a FITS file"):
        read_posterior(text)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(plain)
    with pytest.raises(InputError, match="plain.fits has no GDBVERS keyword"):
        read_posterior(plain)
    path = write_posterior(_result(), tmp_path / "post.fits")
    with fits.open(path) as hdul:
        del hdul["SRC7_SAMPLES"]
        hdul.writeto(tmp_path / "cut.fits")
    with pytest.raises(InputError, match="cut.fits has no HDU SRC7_SAMPLES"):
        read_posterior(tmp_path / "cut.fits")
