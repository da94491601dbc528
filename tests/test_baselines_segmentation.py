"""Segmentation baselines on a galsim blend with known positions and fluxes; source matching."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from galdeblend.baselines.segmentation import (
    BaselineResult,
    match_sources,
    photutils_deblend,
    sep_deblend,
)
from galdeblend.errors import InputError

PIXEL_SCALE = 0.2
SIZE = 64
# Two isolated galaxies, then an overlapping pair 6.7 pixels apart.
POSITIONS = np.array([[12.0, 13.0], [52.0, 15.0], [28.0, 44.0], [34.0, 47.0]])
FLUXES = np.array([[8000.0, 12000.0], [6000.0, 5000.0], [10000.0, 9000.0], [7000.0, 8000.0]])
PROFILES = [
    galsim.Exponential(half_light_radius=0.35),
    galsim.Gaussian(sigma=0.4),
    galsim.Exponential(half_light_radius=0.3),
    galsim.Gaussian(sigma=0.35),
]
PSF = galsim.Gaussian(fwhm=0.5)
VARIANCE = np.array([1.0, 4.0])[:, None, None] * np.ones((2, SIZE, SIZE))

METHODS = [photutils_deblend]
try:
    import sep  # noqa: F401

    METHODS.append(sep_deblend)
except ImportError:
    pass


@pytest.fixture(scope="module")
def blend() -> tuple[np.ndarray, np.ndarray]:
    """Noisy two-band blend (2, H, W) and the noiseless galaxies (4, 2, H, W), PSF-convolved."""
    truth = np.zeros((len(PROFILES), 2, SIZE, SIZE))
    centre = (SIZE - 1) / 2  # galsim's true centre, in 0-based pixels
    for n, profile in enumerate(PROFILES):
        for c in range(2):
            image = galsim.ImageD(SIZE, SIZE, scale=PIXEL_SCALE)
            galaxy = galsim.Convolve(profile.withFlux(FLUXES[n, c]), PSF)
            galaxy.drawImage(image, offset=tuple(POSITIONS[n] - centre))
            truth[n, c] = image.array
    rng = np.random.default_rng(0)
    return truth.sum(axis=0) + np.sqrt(VARIANCE) * rng.normal(size=VARIANCE.shape), truth


@pytest.mark.parametrize("deblend", METHODS)
def test_finds_sources_positions_and_isolated_fluxes(deblend, blend) -> None:
    image, truth = blend
    result = deblend(image, VARIANCE)
    assert result.sources.shape == (4, 2, SIZE, SIZE)
    detected, true = match_sources(result.positions, POSITIONS, 1.0)
    np.testing.assert_array_equal(true, [0, 1, 2, 3])
    np.testing.assert_allclose(result.positions[detected], POSITIONS, atol=0.5)
    # Isolated galaxies: the segment holds all but the faint wings.
    np.testing.assert_allclose(result.flux[detected[:2]], FLUXES[:2], rtol=0.02)
    # The pair shares its flux: each gets the right share to within 15%.
    np.testing.assert_allclose(result.flux[detected[2:]], FLUXES[2:], rtol=0.15)
    # Segments are disjoint, and each source image is the data on its own segment.
    raw = deblend(image, VARIANCE, background=False)
    on = raw.segmentation > 0
    np.testing.assert_allclose(raw.sources.sum(axis=0)[:, on], image[:, on])
    np.testing.assert_allclose(raw.sources.sum(axis=(-2, -1)), raw.flux)
    assert np.all(raw.sources[:, :, raw.segmentation == 0] == 0)


@pytest.mark.parametrize("deblend", METHODS)
def test_residual_background_is_removed(deblend, blend) -> None:
    """A residual sky plane (3 sigma offset, 2 sigma gradient) biases segment fluxes unless
    subtracted; subtracted, the isolated fluxes are as without it."""
    image, _ = blend
    y, x = np.mgrid[:SIZE, :SIZE] / (SIZE - 1)
    plane = np.sqrt(VARIANCE) * (3.0 + 2.0 * x - 1.0 * y)
    result = deblend(image + plane, VARIANCE)
    detected, true = match_sources(result.positions, POSITIONS, 1.0)
    np.testing.assert_array_equal(true, [0, 1, 2, 3])
    np.testing.assert_allclose(result.flux[detected[:2]], FLUXES[:2], rtol=0.02)
    biased = deblend(image + plane, VARIANCE, background=False)
    detected, true = match_sources(biased.positions, POSITIONS, 1.0)
    isolated = detected[np.isin(true, [0, 1])]
    assert np.abs(biased.flux[isolated] / FLUXES[true[np.isin(true, [0, 1])]] - 1).max() > 0.03


@pytest.mark.parametrize("deblend", METHODS)
def test_blank_sky_single_band_and_masks(deblend) -> None:
    rng = np.random.default_rng(5)
    blank = deblend(rng.normal(size=(40, 40)), 1.0)
    assert blank.sources.shape == (0, 1, 40, 40) and blank.positions.shape == (0, 2)

    galaxy = galsim.Gaussian(sigma=0.5, flux=3000.0).drawImage(nx=40, ny=40, scale=0.2).array
    image = galaxy + rng.normal(size=(40, 40))
    mask = np.zeros((40, 40), bool)
    mask[:, 5] = True  # a bad column far from the galaxy, with a spurious bright value
    image[:, 5] = 1e6
    result = deblend(image, 1.0, mask=mask)
    assert result.positions.shape == (1, 2)
    np.testing.assert_allclose(result.positions[0], [19.5, 19.5], atol=0.3)
    assert result.flux[0, 0] == pytest.approx(3000.0, rel=0.03)


@pytest.mark.parametrize("deblend", METHODS)
def test_detection_band_and_input_errors(deblend, blend) -> None:
    image, _ = blend
    only_second = image.copy()
    only_second[0] = np.random.default_rng(6).normal(size=(SIZE, SIZE))  # no galaxies in band 0
    assert deblend(only_second, VARIANCE, detection_band=0).positions.shape == (0, 2)
    assert deblend(only_second, VARIANCE, detection_band=1).positions.shape[0] == 4
    with pytest.raises(InputError, match="detection_band=2 is out of range for 2 band"):
        deblend(image, VARIANCE, detection_band=2)
    with pytest.raises(InputError, match="variance must be finite and > 0"):
        deblend(image, 0.0)
    with pytest.raises(InputError, match=r"image: expected shape \(H, W\) or \(C, H, W\)"):
        deblend(image[None], 1.0)
    with pytest.raises(InputError, match="must broadcast to the image shape"):
        deblend(image, np.ones(3))


def test_match_sources_optimal_and_distance_cut() -> None:
    true_xy = np.array([[0.0, 0.0], [2.0, 0.0], [20.0, 0.0]])
    # Greedy nearest would pair detection 0 with truth 1 (0.9 apart) and leave detection 1
    # 3.5 from truth 0, beyond the cut; the assignment matches both: 0 -> 0 and 1 -> 1.
    detected_xy = np.array([[1.1, 0.0], [3.5, 0.0], [50.0, 0.0]])
    detected, true = match_sources(detected_xy, true_xy, 2.0)
    np.testing.assert_array_equal(detected, [0, 1])
    np.testing.assert_array_equal(true, [0, 1])
    detected, true = match_sources(detected_xy[::-1], true_xy, 1.0)
    np.testing.assert_array_equal(detected, [2])
    np.testing.assert_array_equal(true, [1])
    assert match_sources(np.zeros((0, 2)), true_xy, 1.0)[0].size == 0
    with pytest.raises(InputError, match="max_distance must be > 0"):
        match_sources(detected_xy, true_xy, 0.0)


@pytest.mark.slow  # about 30 s on one CPU core, mostly jax compilation
def test_scarlet2_recovers_isolated_fluxes(blend) -> None:
    pytest.importorskip("scarlet2")
    from galdeblend.baselines.scarlet2_adapter import scarlet2_deblend

    image, _ = blend
    psf = PSF.drawImage(nx=21, ny=21, scale=PIXEL_SCALE).array
    result = scarlet2_deblend(image, VARIANCE, POSITIONS, psf=psf)
    assert isinstance(result, BaselineResult) and result.segmentation is None
    assert result.sources.shape == (4, 2, SIZE, SIZE)
    np.testing.assert_allclose(result.flux[:2], FLUXES[:2], rtol=0.03)
    # The model explains the data: residual chi^2 per pixel close to 1.
    residual = (image - result.sources.sum(axis=0)) ** 2 / VARIANCE
    assert 0.8 < residual.mean() < 1.3


def test_scarlet2_input_errors(blend) -> None:
    pytest.importorskip("scarlet2")
    from galdeblend.baselines.scarlet2_adapter import scarlet2_deblend

    image, _ = blend
    psf = PSF.drawImage(nx=21, ny=21, scale=PIXEL_SCALE).array
    with pytest.raises(InputError, match=r"psf: expected shape \(h, w\) or \(C, h, w\)"):
        scarlet2_deblend(image, VARIANCE, POSITIONS, psf=np.ones((3, 5, 5)))
    with pytest.raises(InputError, match=r"positions: expected shape \(N, 2\)"):
        scarlet2_deblend(image, VARIANCE, POSITIONS[:, :1], psf=psf)
    with pytest.raises(InputError, match="psf: every band's PSF image must have a positive sum"):
        scarlet2_deblend(image, VARIANCE, POSITIONS, psf=np.zeros((5, 5)))
