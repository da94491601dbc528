"""benchmarks/light_budget.py on two tiny simulated blends deblended by ``galdeblend run``
(the ``tiny_deblends`` fixture)."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.coordinates import SkyCoord

pytest.importorskip("galsim")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import light_budget  # noqa: E402

from galdeblend.io import read_posterior  # noqa: E402
from galdeblend.metrics import aperture_flux  # noqa: E402
from galdeblend.scene import sky_operator  # noqa: E402
from galdeblend.simulate import read_truth  # noqa: E402
from galdeblend.validate import APERTURE_ARCSEC, score_blend  # noqa: E402


@pytest.fixture(scope="module")
def blends(tiny_deblends) -> list[tuple[str, object, object]]:
    """``(name, DeblendResult, SceneTruth)`` of the two tiny blends (2 posterior samples)."""
    simdir, results = tiny_deblends
    scenes = json.loads((simdir / "manifest.json").read_text())["scenes"]
    return [
        (
            s["name"],
            read_posterior(results / f"{Path(s['cutouts']['hsc']).stem}_posterior.fits"),
            read_truth(simdir / s["truth"]),
        )
        for s in scenes
    ]


def test_rendered_means_rebuild_the_posterior_mean_model(blends):
    """Galaxies and sky rendered from the saved samples sum to the model ``run`` saved (to
    float32 rounding; the run's galaxy kernels are cropped, which these faint galaxies do
    not feel). The untrained prior leaves most light to the sky, so the sky is tested too."""
    for _, result, _ in blends:
        galaxies, sky = light_budget.render(result)
        good = ~result.observations[0].mask
        model = result.models[0][good]
        sky_mean = sky.mean(axis=0)[good]
        assert np.abs(sky_mean).max() > 0.1 * np.abs(model).max()
        rebuilt = sum(g.mean(axis=0) for g in galaxies)[good] + sky_mean
        np.testing.assert_allclose(rebuilt, model, rtol=0, atol=1e-6 * np.abs(model).max())


def test_own_part_is_what_validate_scores(blends):
    """The ``own`` part reproduces validate's intervals and errors of the matched galaxies."""
    matched = 0
    for name, result, truth in blends:
        rows, _, _ = score_blend(name, result, truth, "hsc", baselines=())
        rows = [r for r in rows if r["matched"]]
        inside, error, std = light_budget.blend_parts(name, result, truth, "hsc")["own"]
        assert len(rows) == 5 * len(inside)
        for level, flags in zip(light_budget.LEVELS, np.concatenate(inside, axis=1)):
            assert [r[f"inside_{level:g}"] for r in rows] == flags.tolist()
        expected = [r["flux_error"] / r["flux_noise"] for r in rows]
        np.testing.assert_allclose(np.concatenate(error), expected, rtol=1e-10)
        assert (np.concatenate(std) > 0).all()
        matched += len(inside)
    assert matched > 0


def test_galaxies_and_sky_add_up_to_the_whole_model(blends):
    """Aperture fluxes are linear: per pair, the errors of ``galaxies`` and ``sky`` add up to
    that of ``galaxies + sky``, and each part has one entry per true galaxy."""
    for name, result, truth in blends:
        parts = light_budget.blend_parts(name, result, truth, "hsc")
        for part in ("galaxies", "sky", "galaxies + sky"):
            assert len(parts[part][0]) == len(truth.galaxies)
        total = np.concatenate(parts["galaxies"][1]) + np.concatenate(parts["sky"][1])
        np.testing.assert_allclose(np.concatenate(parts["galaxies + sky"][1]), total, rtol=1e-9)


def test_sky_from_beyond_stamps_gives_back_a_sky_plane(blends):
    """Light beyond the stamps that is itself a sky of the node grid (here split between two
    galaxies) is fitted exactly, and ``blend_parts`` gives its aperture fluxes in units of
    the aperture noise."""
    name, result, truth = blends[0]
    obs = result.observations[0]
    grid = next(inst.frame.shape[-1] for inst in result.instances if inst.kind == "sky")
    clear = dataclasses.replace(obs, mask=np.zeros_like(obs.mask))
    nodes = torch.from_numpy(
        np.random.default_rng(0).uniform(1, 100, (obs.shape[0], 1, grid, grid))
    )
    plane = sum(
        sky_operator(clear, c, grid).forward(nodes[c : c + 1])[0].numpy()
        for c in range(obs.shape[0])
    )
    got = light_budget.sky_from_beyond_stamps(result, np.stack([0.25 * plane, 0.75 * plane]))
    np.testing.assert_allclose(got, plane, rtol=1e-8)
    predicted = light_budget.blend_parts(name, result, truth, "hsc", got)[light_budget.OUTSIDE][1]
    variance = np.where(obs.mask, 0.0, obs.variance)
    radius = APERTURE_ARCSEC / obs.pixel_scale
    for k, (x, y) in enumerate(zip(truth.galaxies["x_hsc"], truth.galaxies["y_hsc"])):
        xy = (float(x), float(y))
        expected = aperture_flux(plane, xy, radius) / np.sqrt(aperture_flux(variance, xy, radius))
        np.testing.assert_allclose(predicted[k], expected, rtol=1e-8)
    assert np.abs(np.array(predicted)).min() > 0


def test_galaxy_roles_name_the_brightest_once(blends):
    """Each blend of several has one brightest galaxy, the one of largest true HSC flux, and
    the rest are its neighbours; a galaxy alone in its blend is neither."""
    for _, result, truth in blends:
        bands = result.observations[0].bands
        flux = sum(np.asarray(truth.galaxies[f"flux_hsc_{b}"]) for b in bands)
        roles = light_budget.galaxy_roles(truth, "hsc", bands)
        assert len(flux) > 1
        assert roles.count(light_budget.ROLES[0]) == 1
        assert roles.index(light_budget.ROLES[0]) == int(np.argmax(flux))
        assert roles.count(light_budget.ROLES[1]) == len(flux) - 1
        alone = dataclasses.replace(truth, galaxies=truth.galaxies[1:2])
        assert light_budget.galaxy_roles(alone, "hsc", bands) == [light_budget.ROLES[2]]


def test_excess_zones_put_each_pixel_in_its_ring_and_side():
    """0.1" pixels, the brightest galaxy to the +x side: a pixel 0.1" toward it is core,
    facing; 0.8" the other way, outskirts, away; 1.8" straight up (on the dividing line),
    beyond, away; exactly 1.5" toward it, beyond, facing. Nothing is lost or counted twice."""
    excess = np.zeros((2, 41, 41))
    for (x, y), value in {(21, 20): 1.0, (12, 20): 2.0, (20, 38): 4.0, (35, 20): 8.0}.items():
        excess[:, y, x] = value
    excess[1] *= -1
    zones = light_budget.excess_zones(excess, np.array([20.0, 20.0]), np.array([30.0, 20.0]), 0.1)
    expected = dict.fromkeys(light_budget.ZONES, 0.0)
    core, outskirts, beyond = (light_budget.ZONES[i : i + 2] for i in (0, 2, 4))
    expected.update({core[0]: 1.0, outskirts[1]: 2.0, beyond[1]: 4.0, beyond[0]: 8.0})
    assert {z: v.tolist() for z, v in zones.items()} == {z: [v, -v] for z, v in expected.items()}


def test_beyond_stamps_is_the_light_outside_the_square(blends):
    """With no square, the light beyond is each galaxy's whole image as galsim drew it (to
    2% of its peak: galdeblend's operator against galsim's rendering, same flux by
    construction); with a square larger than the truth's grid it is nothing; with the
    prior's 1.6" stamp it is part of the light, lying farther from the centre on average."""
    for _, result, truth in blends:
        obs = result.observations[0]
        images = truth.survey_galaxies["hsc"]
        whole = light_budget.beyond_stamps(truth, obs, "hsc", 0.0)
        for k in range(len(images)):
            np.testing.assert_allclose(
                whole[k].sum(axis=(1, 2)), images[k].sum(axis=(1, 2)), rtol=1e-9
            )
            np.testing.assert_allclose(whole[k], images[k], rtol=0, atol=0.02 * images[k].max())
        assert not light_budget.beyond_stamps(truth, obs, "hsc", 100.0).any()
        beyond = light_budget.beyond_stamps(truth, obs, "hsc", 0.8)
        yy, xx = np.mgrid[: obs.shape[1], : obs.shape[2]]
        for k, row in enumerate(truth.galaxies):
            assert 0 < beyond[k].sum() < 0.9 * images[k].sum()
            r = np.hypot(xx - row["x_hsc"], yy - row["y_hsc"])
            assert (r * beyond[k]).sum() / beyond[k].sum() > (r * images[k]).sum() / images[k].sum()


def _a_galaxy_instance_at_every_true_galaxy(result, truth):
    """``result`` with its first galaxy instance copied onto each true galaxy's centre (the
    untrained prior of the fixture finds one galaxy per blend), so that every galaxy is
    matched."""
    first = result.galaxies[0]
    galaxies = []
    for k, row in enumerate(truth.galaxies):
        wcs = first.frame.wcs.deepcopy()
        wcs.wcs.crval = [row["ra"], row["dec"]]
        center = SkyCoord(row["ra"], row["dec"], unit="deg")
        frame = dataclasses.replace(first.frame, wcs=wcs)
        galaxies.append(dataclasses.replace(first, id=k, frame=frame, center=center))
    sky = [inst for inst in result.instances if inst.kind != "galaxy"]
    return dataclasses.replace(result, instances=galaxies + sky)


def test_neighbours_are_filed_by_the_others_light_beyond_stamps(blends):
    """Each fainter neighbour of a completely matched blend goes under one entry of BEYOND:
    the second when no light lies beyond the stamps, the first when much does."""
    filed = 0
    for name, result, truth in blends:
        result = _a_galaxy_instance_at_every_true_galaxy(result, truth)
        for scale, entry in ((0.0, 1), (1e9, 0)):
            beyond = np.full_like(truth.survey_galaxies["hsc"], scale)
            parts = light_budget.blend_parts(name, result, truth, "hsc", beyond=beyond)
            neighbours = parts[light_budget.ROLES[1]][1]
            assert parts[light_budget.BEYOND[entry]][1] == neighbours
            assert parts[light_budget.BEYOND[1 - entry]][1] == []
            filed += len(neighbours)
    assert filed == 2 * sum(len(truth.galaxies) - 1 for _, _, truth in blends)  # both scales
