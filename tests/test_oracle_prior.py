"""benchmarks/oracle_prior.py: the true galaxies in the units the deblender gives them."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("galsim")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import oracle_prior  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402

from galdeblend.scene import PriorFrame, build_problem, place_instances  # noqa: E402
from galdeblend.simulate import simulate_scene  # noqa: E402

BANDS = ("g", "r", "i", "z", "y", "F814W")


def test_true_galaxies_forward_modelled_give_the_noiseless_survey_images():
    """Through each instance's operator (flux scale included), the oracle's training stamps
    must rebuild the truth's noiseless survey images, up to the light beyond the stamp."""
    scene = simulate_scene(oracle_prior.SURVEYS, seed=3, stamp_arcsec=4.0)
    frame = PriorFrame((len(BANDS), 40, 40), 0.06, BANDS, 0.07)
    x, held = oracle_prior.true_galaxies(scene, frame)
    assert x.shape == (len(scene.galaxies), *frame.shape)
    assert np.all((held > 0.8) & (held < 1.05))

    positions = SkyCoord(scene.sky_coords[:, 0], scene.sky_coords[:, 1], unit="deg")
    observations = scene.observations()
    problem = build_problem(observations, place_instances(observations, frame, positions=positions))
    model = sum(
        A.forward(torch.from_numpy(x_k[None].copy()))
        for A, x_k in zip(problem.operators, x)  # the galaxies come first
    )
    for obs, block, survey in zip(observations, problem.split(model), oracle_prior.SURVEYS):
        truth = scene.surveys[survey].galaxies.sum(0)
        good = ~obs.mask
        residual = (block[0].numpy() - truth)[good]
        assert np.linalg.norm(residual) < 0.1 * np.linalg.norm(truth[good]), survey


def test_dihedral_gives_the_eight_symmetries_of_a_stamp():
    x = np.arange(2 * 9, dtype=float).reshape(1, 2, 3, 3)
    copies = oracle_prior.dihedral(x)
    assert copies.shape == (8, 2, 3, 3)
    assert len({c.tobytes() for c in copies}) == 8
    np.testing.assert_array_equal(copies[0], x[0])
