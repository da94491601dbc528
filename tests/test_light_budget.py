"""benchmarks/light_budget.py on two tiny simulated blends deblended by ``galdeblend run``
(the ``tiny_deblends`` fixture)."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_sky_from_outside_stamps_gives_back_a_sky_plane(blends):
    """With no galaxy instance, all the true light is outside the stamps; light that is itself
    a sky of the node grid is fitted exactly, and ``blend_parts`` gives its aperture fluxes
    in units of the aperture noise."""
    name, result, truth = blends[0]
    obs = result.observations[0]
    skies = [inst for inst in result.instances if inst.kind == "sky"]
    grid = skies[0].frame.shape[-1]
    clear = dataclasses.replace(obs, mask=np.zeros_like(obs.mask))
    nodes = torch.from_numpy(
        np.random.default_rng(0).uniform(1, 100, (obs.shape[0], 1, grid, grid))
    )
    plane = sum(
        sky_operator(clear, c, grid).forward(nodes[c : c + 1])[0].numpy()
        for c in range(obs.shape[0])
    )
    got = light_budget.sky_from_outside_stamps(
        dataclasses.replace(result, instances=skies),
        dataclasses.replace(truth, survey_galaxies={"hsc": plane[None]}),
        "hsc",
    )
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
