"""Residual background: a plane under galsim galaxies, bad pixels and noise is recovered."""

import galsim
import numpy as np

from galdeblend.background import plane_background


def test_plane_under_galaxies_and_a_bad_column():
    rng = np.random.default_rng(3)
    size, sigma = 60, 1.0
    y, x = np.mgrid[:size, :size]
    plane = 0.4 + 0.02 * x - 0.015 * y
    image = plane + sigma * rng.normal(size=(size, size))
    for (cx, cy), flux in [((15, 20), 600.0), ((40, 38), 1500.0), ((45, 12), 300.0)]:
        stamp = galsim.Exponential(half_light_radius=0.4, flux=flux).drawImage(
            nx=size, ny=size, scale=0.2, offset=(cx - (size - 1) / 2, cy - (size - 1) / 2)
        )
        image += stamp.array
    mask = np.zeros_like(image, dtype=bool)
    mask[:, 30] = True
    image[:, 30] = 1e5
    fitted = plane_background(image, mask=mask)
    # The noise alone leaves ~0.02 sigma; the galaxies' wings below the clip (16% of the
    # pixels above 0.1 sigma) pull the plane up by ~0.1 sigma.
    assert np.sqrt(np.mean((fitted - plane) ** 2)) < 0.15
    # Without clipping (one iteration = plain least squares) they pull it up 7 times more.
    unclipped = plane_background(image, mask=mask, iterations=1)
    assert np.mean(unclipped - plane) > 0.5


def test_too_few_pixels_gives_zero():
    image = np.ones((4, 4))
    assert np.all(plane_background(image, mask=np.ones((4, 4), bool)) == 0)
