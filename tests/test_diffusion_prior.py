"""A small diffusion prior learned on a 2-D toy: moments, two-sample test, save/load."""

import math

import pytest
import torch

from galdeblend.engine import MLP, DiffusionPrior, load_prior, sample_prior


def toy_samples(n, seed):
    """A banana-shaped 2-D distribution: x1 ~ N(0, 1), x2 = 0.5 x1^2 - 0.5 + 0.3 eps."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, generator=g)
    x2 = 0.5 * x1**2 - 0.5 + 0.3 * torch.randn(n, generator=g)
    return torch.stack([x1, x2], dim=1)


def mmd2(x, y, bandwidth=0.5):
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel."""

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth**2))

    n, m = len(x), len(y)
    kxx = (k(x, x).sum() - n) / (n * (n - 1))
    kyy = (k(y, y).sum() - m) / (m * (m - 1))
    return kxx + kyy - 2 * k(x, y).mean()


def test_toy_prior_matches_truth(tmp_path):
    torch.manual_seed(0)
    prior = DiffusionPrior(
        MLP(2, hidden_features=128, hidden_layers=3), sigma_min=1e-3, sigma_max=10.0
    )
    prior.fit(toy_samples(8192, 0), steps=1500, batch_size=256, lr=2e-3, seed=0, progress=False)
    x = sample_prior(prior, 2048, steps=64, seed=1)
    truth = toy_samples(2048, 1)
    assert torch.linalg.norm(x.mean(0) - truth.mean(0)) < 0.1
    assert (
        torch.linalg.norm(torch.cov(x.T) - torch.cov(truth.T))
        / torch.linalg.norm(torch.cov(truth.T))
        < 0.15
    )
    # Kernel two-sample statistic: model vs truth is close to truth vs truth
    # and far from a Gaussian fit.
    same = mmd2(truth, toy_samples(2048, 2))
    gauss = (
        torch.randn(2048, 2, generator=torch.Generator().manual_seed(3))
        @ torch.linalg.cholesky(torch.cov(truth.T)).T
    )
    model = mmd2(x, truth)
    assert model < 0.5 * mmd2(gauss + truth.mean(0), truth)
    assert model < same + 5e-3

    prior.save(tmp_path / "toy")
    loaded = load_prior(tmp_path / "toy")
    x_t = torch.randn(5, 2)
    sigma = torch.full((5,), 0.3)
    torch.testing.assert_close(loaded(x_t, sigma), prior(x_t, sigma))
    assert math.isclose(loaded.schedule.sigma_max, 10.0)


def _unet_prior():
    from galdeblend.engine import UNet

    torch.manual_seed(0)
    backbone = UNet(2, channels=(8, 16), attention_levels=(1,))
    return DiffusionPrior(backbone, shape=(2, 16, 16)).eval().requires_grad_(False)


def test_accelerate_keeps_the_denoiser_and_its_saved_weights(tmp_path):
    prior = _unet_prior()
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 2, 16, 16, generator=g)
    sigma = torch.tensor([0.05, 0.5, 2.0, 10.0])
    reference = prior(x_t, sigma)

    prior.accelerate(channels_last=True)
    torch.testing.assert_close(prior(x_t, sigma), reference, rtol=1e-5, atol=1e-5)

    prior.accelerate(bf16=True)
    fast = prior(x_t, sigma)
    assert fast.dtype == x_t.dtype  # the preconditioning and the output stay in float32
    error = (fast - reference).norm() / reference.norm()
    assert 0 < error < 0.02  # bfloat16 keeps about 3 significant digits in the network

    prior.save(tmp_path / "p")
    torch.testing.assert_close(load_prior(tmp_path / "p")(x_t, sigma), reference)


@pytest.mark.slow
def test_compiled_prior_matches_eager_values_and_vector_jacobian_products():
    prior = _unet_prior()
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(4, 2, 16, 16, generator=g)
    sigma = torch.tensor([0.05, 0.5, 2.0, 10.0])
    v = torch.randn(4, 2, 16, 16, generator=g)

    def value_and_vjp(p):
        x = x_t.clone().requires_grad_(True)
        out = p(x, sigma)
        (vjp,) = torch.autograd.grad(out, x, v)
        return out.detach(), vjp

    reference = value_and_vjp(prior)
    compiled = value_and_vjp(prior.accelerate(compile="default"))
    for a, b in zip(compiled, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
