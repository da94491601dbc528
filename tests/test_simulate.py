"""Tests of galdeblend.simulate: presets, galaxies, scenes, files and their truth."""

from __future__ import annotations

import json
import math
import warnings

import galsim
import numpy as np
import pytest
from astropy.io import fits

from galdeblend.errors import InputError
from galdeblend.io.readers import read_cutouts
from galdeblend.io.simulation_fits import scene_truth
from galdeblend.simulate import (
    MASK_PLANES,
    available_surveys,
    cosmos_sample,
    draw_galaxy,
    draw_parametric_galaxy,
    draw_real_galaxy,
    get_survey,
    read_truth,
    simulate_dataset,
    simulate_scene,
)
from galdeblend.simulate.scenes import draw_galaxy_images
from galdeblend.simulate.surveys import load_surveys

_KEYS = ("wavelength", "zeropoint", "sky", "psf_fwhm", "exposure_time", "n_exposures")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two blends and one blank-sky cutout in HSC + HST (small footprint)."""
    outdir = tmp_path_factory.mktemp("sim")
    manifest = simulate_dataset(
        outdir,
        surveys=("hsc", "hst"),
        n_blends=2,
        n_sky=1,
        seed=7,
        stamp_arcsec=4.0,
        progress=False,
    )
    return outdir, manifest


# --------------------------------------------------------------------------- presets


def test_presets_have_the_four_surveys_and_their_keys():
    assert {"hst", "hsc", "lsst", "euclid"} <= set(available_surveys())
    expected_bands = {
        "hst": ("F814W",),
        "hsc": ("g", "r", "i", "z", "y"),
        "lsst": ("u", "g", "r", "i", "z", "y"),
        "euclid": ("VIS",),
    }
    for name, bands in expected_bands.items():
        survey = get_survey(name)
        assert survey.band_names == bands
        assert survey.pixel_scale > 0 and survey.gain > 0 and survey.read_noise > 0
        for band in survey.bands:
            assert all(getattr(band, key) > 0 for key in _KEYS)
    # A 22.5 mag source gives 10**(-0.4 (22.5 - zp)) e-/s: check the ADU conversion.
    hsc = get_survey("HSC")
    i = hsc.band("i")
    adu = 10 ** (-0.4 * (22.5 - i.zeropoint)) * i.exposure_time / hsc.gain
    assert hsc.adu_per_njy(i) * 10 ** (-0.4 * (22.5 - 31.4)) == pytest.approx(adu, rel=1e-12)


def test_ground_psf_fwhm_matches_the_preset():
    hsc = get_survey("hsc")
    for band in hsc.bands[:2]:
        fwhm = hsc.psf(band).calculateFWHM(scale=0.02)
        assert fwhm == pytest.approx(band.psf_fwhm, rel=0.02)


def test_preset_errors():
    with pytest.raises(InputError, match="unknown survey 'roman'"):
        get_survey("roman")
    bad = "x:\n  description: d\n  pixel_scale: 0.1\n  gain: 1\n  read_noise: 1\n  bands: {}\n"
    with pytest.raises(InputError, match=r"survey 'x': missing keys \['psf'\]"):
        load_surveys(bad)
    text = bad.replace("  bands: {}", "  psf: {atmosphere: lorentz, diameter: 1, obscuration: 0}")
    text += "  bands: {b: {wavelength: 500}}\n"
    with pytest.raises(InputError, match="atmosphere must be one of"):
        load_surveys(text)
    with pytest.raises(InputError, match="survey 'hsc' has no band 'u'"):
        get_survey("hsc").band("u")


# --------------------------------------------------------------------------- galaxies


def test_parametric_galaxy_flux_and_half_light_radius():
    rng = np.random.default_rng(3)
    galaxy = draw_parametric_galaxy(rng, mag_range=(21.0, 21.5))
    assert 21.0 <= galaxy.magnitude(775.0) <= 21.5
    # The half-light radius of the unsheared profile, measured by galsim on an image.
    circular = galsim.Add(
        [c.profile.shear(g1=-galaxy.e1, g2=-galaxy.e2) for c in galaxy.components]
    )
    unsheared = galsim.Add(
        [
            p.withFlux(c.flux(775.0))
            for p, c in zip(circular.obj_list, galaxy.components, strict=True)
        ]
    )
    assert unsheared.calculateHLR(scale=galaxy.hlr / 20) == pytest.approx(galaxy.hlr, rel=0.03)
    # The bulge is redder than the disk: the galaxy is brighter at 1 micron than at 400 nm.
    assert galaxy.magnitude(1000.0) < galaxy.magnitude(400.0)


def test_real_galaxy_colours_follow_the_catalogue():
    sample = cosmos_sample()
    rng = np.random.default_rng(0)
    galaxy = draw_real_galaxy(rng, index=5)
    hsc = get_survey("hsc")
    mags = np.array([galaxy.magnitude(b.wavelength) for b in hsc.bands])
    offset = mags - sample.hsc_magnitudes[5]
    np.testing.assert_allclose(offset, offset[0], atol=1e-10)
    # Its F814W flux is that of the HST stamp.
    stamp = sample.catalog.makeGalaxy(5, gal_type="real", noise_pad_size=0)
    f814w = get_survey("hst").bands[0]
    assert galaxy.magnitude(f814w.wavelength) == pytest.approx(
        f814w.zeropoint - 2.5 * math.log10(stamp.flux), abs=1e-10
    )
    with pytest.raises(InputError, match=r"index must be in \[0, 75\)"):
        draw_real_galaxy(rng, index=75)
    with pytest.raises(InputError, match="galaxy_type must be 'parametric' or 'real'"):
        draw_galaxy(rng, "sersic")


def test_drawn_galaxy_holds_its_flux():
    galaxy = draw_parametric_galaxy(np.random.default_rng(1), mag_range=(23.0, 23.5))
    hsc = get_survey("hsc")
    band = hsc.band("r")
    images = draw_galaxy_images(
        [galaxy],
        np.array([[0.3, -0.2]]),
        shape=(121, 121),
        jacobian=hsc.pixel_scale * np.eye(2),
        psfs=[hsc.psf(band)],
        wavelengths=[band.wavelength],
        units_per_njy=[hsc.adu_per_njy(band)],
    )
    expected = galaxy.flux(band.wavelength) * hsc.adu_per_njy(band)
    assert images.sum() == pytest.approx(expected, rel=5e-3)


# --------------------------------------------------------------------------- scenes


def test_scene_is_reproducible_from_its_seed():
    a = simulate_scene(("hsc",), seed=11, stamp_arcsec=4.0)
    b = simulate_scene(("hsc",), seed=11, stamp_arcsec=4.0)
    c = simulate_scene(("hsc",), seed=12, stamp_arcsec=4.0)
    for field in ("image", "variance", "mask_bits", "galaxies", "background"):
        np.testing.assert_array_equal(
            getattr(a.surveys["hsc"], field), getattr(b.surveys["hsc"], field)
        )
    np.testing.assert_array_equal(a.model.galaxies, b.model.galaxies)
    assert not np.array_equal(a.surveys["hsc"].image, c.surveys["hsc"].image)


def test_files_are_reproducible(dataset, tmp_path):
    outdir, manifest = dataset
    again = simulate_dataset(
        tmp_path,
        surveys=("hsc", "hst"),
        n_blends=2,
        n_sky=1,
        seed=7,
        stamp_arcsec=4.0,
        progress=False,
    )
    assert again["scenes"] == manifest["scenes"]
    for scene in manifest["scenes"]:
        for name in [*scene["cutouts"].values(), scene["truth"]]:
            with fits.open(outdir / name) as first, fits.open(tmp_path / name) as second:
                for hdu_a, hdu_b in zip(first, second, strict=True):
                    if hdu_a.is_image and hdu_a.data is not None:
                        np.testing.assert_array_equal(hdu_a.data, hdu_b.data)
    other = simulate_dataset(
        tmp_path / "other",
        surveys=("hsc",),
        n_blends=1,
        n_sky=0,
        seed=8,
        stamp_arcsec=4.0,
        progress=False,
    )
    assert other["scenes"][0]["seed"] != manifest["scenes"][0]["seed"]


def test_manifest_lists_the_files(dataset):
    outdir, manifest = dataset
    assert json.loads((outdir / "manifest.json").read_text()) == manifest
    assert manifest["settings"]["seed"] == 7
    assert [s["kind"] for s in manifest["scenes"]] == ["blend", "blend", "sky"]
    assert manifest["scenes"][2]["n_galaxies"] == 0
    for scene in manifest["scenes"]:
        assert set(scene["cutouts"]) == {"hsc", "hst"}
        assert all((outdir / f).is_file() for f in [*scene["cutouts"].values(), scene["truth"]])


def test_truth_sums_to_the_noiseless_image(dataset):
    outdir, manifest = dataset
    for entry in manifest["scenes"]:
        scene = simulate_scene(
            ("hsc", "hst"), seed=entry["seed"], blank=entry["kind"] == "sky", stamp_arcsec=4.0
        )
        truth = read_truth(outdir / entry["truth"])
        assert len(truth.galaxies) == entry["n_galaxies"] == len(scene.galaxies)
        for survey, frame in scene.surveys.items():
            noiseless = truth.survey_galaxies[survey].sum(axis=0) + truth.survey_background[survey]
            np.testing.assert_allclose(noiseless, frame.noiseless, rtol=1e-12, atol=1e-12)
            # The background is the recorded constant + gradient.
            terms = truth.background_terms[truth.background_terms["survey"] == survey]
            h, w = noiseless.shape[1:]
            centre = truth.survey_background[survey][:, (h - 1) // 2, (w - 1) // 2]
            if h % 2 and w % 2:
                np.testing.assert_allclose(centre, terms["constant"], rtol=1e-10)
        assert truth.model.shape[:2] == (len(scene.galaxies), 6)
        assert truth.model_bands[0] == "hsc_g" and truth.model_bands[-1] == "hst_F814W"


def test_scene_truth_in_memory_equals_the_truth_file(dataset):
    outdir, manifest = dataset
    entry = manifest["scenes"][0]
    scene = simulate_scene(("hsc", "hst"), seed=entry["seed"], stamp_arcsec=4.0)
    in_memory, from_file = scene_truth(scene), read_truth(outdir / entry["truth"])
    assert in_memory.galaxies.colnames == from_file.galaxies.colnames
    for name in in_memory.galaxies.colnames:
        assert np.array_equal(in_memory.galaxies[name], from_file.galaxies[name]), name
    np.testing.assert_array_equal(in_memory.model, from_file.model)
    assert in_memory.model_bands == from_file.model_bands
    for survey in ("hsc", "hst"):
        np.testing.assert_array_equal(
            in_memory.survey_galaxies[survey], from_file.survey_galaxies[survey]
        )


def test_truth_fluxes_and_positions(dataset):
    outdir, manifest = dataset
    truth = read_truth(outdir / manifest["scenes"][0]["truth"])
    table = truth.galaxies
    hsc = get_survey("hsc")
    for row, model in zip(table, truth.model, strict=True):
        np.testing.assert_allclose(
            row["flux_adu_hsc_i"], row["flux_hsc_i"] * hsc.adu_per_njy(hsc.band("i")), rtol=1e-12
        )
        assert row["mag_hsc_i"] == pytest.approx(31.4 - 2.5 * math.log10(row["flux_hsc_i"]))
        # Every survey frame's pixel position maps to the galaxy's RA, Dec.
        for survey in ("hsc", "hst"):
            ra, dec = truth.survey_wcs[survey].pixel_to_world_values(
                row[f"x_{survey}"], row[f"y_{survey}"]
            )
            assert ra == pytest.approx(row["ra"], abs=1e-9)
            assert dec == pytest.approx(row["dec"], abs=1e-9)
        # The model-frame image holds at most the galaxy's flux (some may fall outside).
        assert model[2].sum() <= row["flux_hsc_i"] * 1.001


def test_noise_has_the_stated_variance():
    scene = simulate_scene(("lsst",), seed=5, blank=True, stamp_arcsec=24.0)
    frame = scene.surveys["lsst"]
    good = ~frame.mask
    pulls = ((frame.image - frame.noiseless) / np.sqrt(frame.variance))[good]
    assert pulls.size > 50_000
    assert np.mean(pulls**2) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(pulls)) < 0.02
    # Sky + read noise: the variance map equals the preset's, plus the background's Poisson.
    survey = get_survey("lsst")
    band = survey.bands[2]
    expected = (
        survey.sky_electrons(band) + survey.read_variance(band) + frame.background[2] * survey.gain
    ) / survey.gain**2
    np.testing.assert_allclose(frame.variance[2], expected, rtol=1e-12)


def test_masks_flag_the_injected_defects():
    scene = simulate_scene(("hsc",), seed=2, stamp_arcsec=6.0, edge_probability=1.0)
    frame = scene.surveys["hsc"]
    bits = frame.mask_bits
    for plane in ("BAD", "CR", "EDGE", "NO_DATA"):
        assert np.any(bits & (1 << MASK_PLANES[plane])), plane
    for c in range(len(frame.bands)):
        bad_columns = np.all(bits[c] & (1 << MASK_PLANES["BAD"]), axis=0)
        assert bad_columns.sum() >= 1
    # The unmasked pixels are noise around the truth; defects sit far off it.
    pulls = (frame.image - frame.noiseless) / np.sqrt(frame.variance)
    assert np.all(np.abs(pulls[~frame.mask]) < 6.0)
    assert np.all(frame.image[bits & (1 << MASK_PLANES["NO_DATA"]) != 0] == 0.0)
    assert np.all(pulls[bits & (1 << MASK_PLANES["CR"]) != 0] > 10.0)


def test_read_cutouts_round_trip(dataset):
    outdir, manifest = dataset
    entry = manifest["scenes"][0]
    scene = simulate_scene(("hsc", "hst"), seed=entry["seed"], stamp_arcsec=4.0)
    truth = read_truth(outdir / entry["truth"])
    for survey, name in entry["cutouts"].items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (obs,) = read_cutouts(outdir / name)
        frame = scene.surveys[survey]
        assert obs.meta["convention"] == "afw"
        assert obs.bands == get_survey(survey).band_names
        assert obs.pixel_scale == pytest.approx(get_survey(survey).pixel_scale, rel=1e-9)
        np.testing.assert_array_equal(obs.mask, frame.mask)
        good = ~obs.mask
        np.testing.assert_allclose(obs.data[good], frame.image[good], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(obs.variance[good], frame.variance[good], rtol=1e-6)
        assert np.all(obs.data[obs.mask] == 0)
        np.testing.assert_allclose(obs.psf, frame.psf, atol=1e-12)
        ra, dec = obs.wcs.pixel_to_world_values(
            truth.galaxies[f"x_{survey}"], truth.galaxies[f"y_{survey}"]
        )
        np.testing.assert_allclose(ra, truth.galaxies["ra"], atol=1e-10)
        np.testing.assert_allclose(dec, truth.galaxies["dec"], atol=1e-10)


def test_real_galaxies_render_into_hsc_and_hst():
    scene = simulate_scene(("hsc", "hst"), seed=4, galaxy_type="real", stamp_arcsec=4.0)
    assert scene.galaxies and all(g.kind == "real" for g in scene.galaxies)
    assert all(0 <= g.catalog_index < 75 for g in scene.galaxies)
    for frame in scene.surveys.values():
        assert np.all(np.isfinite(frame.galaxies))
        assert frame.galaxies.sum(axis=(0, 2, 3)).min() > 0
    # Same galaxy, same flux ratio across frames: i band (HSC) vs F814W (HST) in nJy.
    galaxy = scene.galaxies[0]
    hsc, hst = get_survey("hsc"), get_survey("hst")
    ratio = galaxy.flux(hsc.band("i").wavelength) / galaxy.flux(hst.bands[0].wavelength)
    assert 0.5 < ratio < 2.0


def test_scene_errors(dataset):
    outdir, manifest = dataset
    with pytest.raises(InputError, match="give at least one survey"):
        simulate_scene((), seed=0)
    with pytest.raises(InputError, match="lists a survey twice"):
        simulate_scene(("hsc", "HSC"), seed=0)
    with pytest.raises(InputError, match="stamp_arcsec must be > 0"):
        simulate_scene(("hsc",), seed=0, stamp_arcsec=0.0)
    with pytest.raises(InputError, match="not a galdeblend truth file"):
        read_truth(outdir / manifest["scenes"][0]["cutouts"]["hsc"])
    with pytest.raises(InputError, match="n_blends and n_sky must be >= 0"):
        simulate_dataset(outdir, n_blends=-1, progress=False)
