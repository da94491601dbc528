"""benchmarks/prior_shapes.py: stamps seen at a survey's PSF."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import prior_shapes  # noqa: E402

from galdeblend.metrics import shape_moments  # noqa: E402

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


def gaussian_stamp(sigma: float, size: int = 64) -> np.ndarray:
    """A round Gaussian of standard deviation ``sigma`` pixels, ``(1, 1, size, size)``."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return np.exp(-(yy**2 + xx**2) / (2 * sigma**2))[None, None]


def test_seeing_adds_the_psf_in_quadrature_and_keeps_the_flux():
    pixel_scale, frame_fwhm, seeing = 0.06, 0.07, 0.61
    sigma_galaxy = 2.0  # pixels, the galaxy already at the frame's PSF
    seen = prior_shapes.see(gaussian_stamp(sigma_galaxy), seeing, frame_fwhm, pixel_scale)
    added = np.sqrt(seeing**2 - frame_fwhm**2) / FWHM_PER_SIGMA / pixel_scale
    moments = shape_moments(seen[:, 0], pixel_scale=pixel_scale)
    expected = np.hypot(sigma_galaxy, added) * pixel_scale
    assert moments.sigma[0] == pytest.approx(expected, rel=0.01)
    assert seen.sum() == pytest.approx(gaussian_stamp(sigma_galaxy).sum(), rel=1e-3)


def test_seeing_sharper_than_the_frame_is_refused():
    with pytest.raises(SystemExit, match="must exceed the prior frame's PSF"):
        prior_shapes.see(gaussian_stamp(2.0), 0.05, 0.07, 0.06)
