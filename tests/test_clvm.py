"""Linear CLVM: contrastive factor models learned by Gaussian EM through operators."""

import pytest
import torch

from galdeblend.baselines import LinearCLVM
from galdeblend.engine import View
from galdeblend.errors import InputError
from galdeblend.operators import Downsample, Identity

NOISE = 0.05


def toy(n=1500, seed=0):
    """4x4 images: a strong background pattern (top rows), a weaker target one (bottom rows).

    Plain PPCA of the target view would pick the background's direction (variance 4 vs 1).
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(1, 4, 4)
    u[..., :2, :] = 1.0  # background pattern
    v = torch.zeros(1, 4, 4)
    v[..., 2:, ::2] = 1.0  # target pattern
    background = 1.0 + 2.0 * torch.randn(n, 1, 1, 1, generator=g) * u
    grass = 1.0 + 2.0 * torch.randn(n, 1, 1, 1, generator=g) * u
    signal = (0.5 + torch.randn(n, 1, 1, 1, generator=g)) * v
    y1 = background + NOISE * torch.randn(background.shape, generator=g)
    y2 = grass + signal + NOISE * torch.randn(grass.shape, generator=g)
    views = [
        View(y1, NOISE**2, ["bg"], [Identity()], name="background"),
        View(y2, NOISE**2, ["bg", "target"], [Identity(), Identity()], name="target"),
    ]
    return views, grass, signal, v


def test_clvm_separates_the_target_pattern():
    views, grass, signal, v = toy()
    sampling = dict(steps=16, cg_iterations=4, batch_size=4096)
    model = LinearCLVM({"bg": (1, 4, 4), "target": (1, 4, 4)}, rank=1, laps=6, sampling=sampling)
    model.fit(views, seed=0)
    target = model.priors["target"]
    torch.testing.assert_close(target.mean, 0.5 * v.flatten(), atol=0.05, rtol=0)
    # The target's covariance is v v^T: its leading factor is along v.
    factor = target.cov_factors[:, 0]
    cosine = (factor @ v.flatten()).abs() / (factor.norm() * v.flatten().norm())
    assert cosine > 0.99
    # Posterior separation: far better than attributing everything to the target.
    x = model.sample_posterior(views[1], seed=1)[1][:, 0]
    error = (x - signal).square().mean()
    assert error < 0.1 * (views[1].y - 1.0 - signal).square().mean()


def test_clvm_through_a_downsampling_operator():
    views, grass, signal, v = toy(n=2000)
    coarse = [
        View(
            Downsample(2).forward(w.y),
            w.noise_variance,
            w.sources,
            [Downsample(2)] * len(w.sources),
        )
        for w in views
    ]
    model = LinearCLVM(
        {"bg": (1, 4, 4), "target": (1, 4, 4)},
        rank=1,
        laps=4,
        sampling=dict(steps=16, cg_iterations=4, batch_size=4096),
    )
    model.fit(views[:1] + coarse[1:], seed=0)
    x = model.sample_posterior(coarse[1], seed=1)[1][:, 0]
    assert x.shape == signal.shape
    assert torch.isfinite(x).all()


def test_clvm_checks_its_arguments():
    with pytest.raises(InputError, match="rank"):
        LinearCLVM({"bg": (4,)}, rank=0)
    with pytest.raises(InputError, match="fit first"):
        LinearCLVM({"bg": (4,)}, rank=1).sample_posterior(toy(n=10)[0][0])
