"""The amplitude step against the closed-form Gaussian conditional of a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galdeblend.amplitudes import redraw_amplitudes
from galdeblend.operators.base import Mask, Stack


def flatten(keep=(1.0, 1.0)) -> Stack:
    """``(B, 2, 12, 12) -> (B, 288)``, plane ``c`` times ``keep[c]`` (0: an unobserved band)."""
    shape = (2, 12, 12)
    mask = Mask(torch.tensor(keep, dtype=torch.float64)[:, None, None])
    return Stack([mask], [shape], shape)


def scene(n_samples: int, seed: int = 0):
    """One galaxy with two planes (templates t0, t1) and a sky, observed with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:12, :12]
    blob = np.exp(-((xx - 5.5) ** 2 + (yy - 5.5) ** 2) / 8.0)
    shape = np.stack([blob, blob**2])  # (2, 12, 12)
    sky = np.full((2, 12, 12), 0.3)
    variance = np.stack([np.full((12, 12), 0.01), np.full((12, 12), 0.04)]).ravel()
    truth = np.array([2.0, 0.5])[:, None, None] * shape + sky
    y = truth.ravel() + np.sqrt(variance) * rng.standard_normal(variance.size)
    galaxy = torch.from_numpy(np.broadcast_to(shape, (n_samples, *shape.shape)).copy())
    sky_samples = torch.from_numpy(np.broadcast_to(sky, (n_samples, *sky.shape)).copy())
    return galaxy, sky_samples, torch.from_numpy(y), torch.from_numpy(variance), shape


def conditional(shape, y, variance, sky, width):
    """Closed-form mean and standard deviation of each plane's amplitude."""
    t = np.zeros((2, y.numel()))
    t[0, :144], t[1, 144:] = shape[0].ravel(), shape[1].ravel()
    precision = (t / variance.numpy()) @ t.T + np.eye(2) / width**2
    rhs = (t / variance.numpy()) @ (y.numpy() - sky.ravel()) + 1.0 / width**2
    cov = np.linalg.inv(precision)
    return cov @ rhs, np.sqrt(np.diag(cov))


@pytest.mark.parametrize("width", [np.inf, 0.05])
def test_amplitudes_follow_the_gaussian_conditional(width):
    galaxy, sky, y, variance, shape = scene(4000)
    out = redraw_amplitudes(
        [galaxy, sky],
        [flatten(), flatten()],
        y,
        variance,
        [True, False],
        width=width,
        generator=torch.Generator().manual_seed(1),
    )
    a = out[0][:, :, 0, 0].numpy() / shape[:, 0, 0]
    mean, std = conditional(shape, y, variance, sky[0].numpy(), width)
    assert a.mean(axis=0) == pytest.approx(mean, abs=5 * std.max() / np.sqrt(4000))
    assert a.std(axis=0) == pytest.approx(std, rel=0.1)
    # the shapes are kept, every plane only rescaled; the sky is untouched
    ratio = out[0].numpy() / galaxy.numpy()
    assert np.allclose(ratio, ratio[:, :, :1, :1])
    assert torch.equal(out[1], sky)
    if np.isinf(width):
        assert np.all(np.abs(mean - [2.0, 0.5]) < 4 * std)  # the truth, to the noise


def test_unobserved_plane_keeps_its_amplitude():
    galaxy, sky, y, variance, _ = scene(50)
    out = redraw_amplitudes(
        [galaxy, sky], [flatten((1.0, 0.0)), flatten()], y, variance, [True, False]
    )
    assert torch.equal(out[0][:, 1], galaxy[:, 1])
    assert not torch.equal(out[0][:, 0], galaxy[:, 0])


def test_width_must_be_positive():
    galaxy, sky, y, variance, _ = scene(2)
    with pytest.raises(ValueError, match="width"):
        redraw_amplitudes([galaxy], [flatten()], y, variance, [True], width=0.0)
