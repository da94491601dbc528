"""data_recipes/default_priors.py: what a prior set records, from ``--init`` or a smooth start."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_recipes"))
import default_priors as recipe  # noqa: E402

from galdeblend.learn import new_priors  # noqa: E402
from galdeblend.scene import PriorFrame  # noqa: E402


def test_a_continued_set_records_its_own_run_not_the_validation_of_its_start(tmp_path):
    frame = PriorFrame((len(recipe.BANDS), 16, 16), 0.06, recipe.BANDS, 0.07)
    start = new_priors(frame, channels=(8, 16), attention_levels=(1,))
    start.metadata["validation"] = {"completeness": 0.84}  # figures of the starting set
    start.save(tmp_path / "start")
    recipe.main(
        ["--init", str(tmp_path / "start"), "--out", str(tmp_path / "out")]
        + ["--fields", "1", "--blank", "1", "--stamp-arcsec", "1.5", "--device", "cpu"]
        + ["--gaussian-laps", "0", "--laps", "1", "--train-steps", "2", "--sampler-steps", "2"]
    )
    metadata = json.loads((tmp_path / "out" / "priors.json").read_text())["metadata"]
    assert "validation" not in metadata
    assert metadata["settings"]["init"] == str(tmp_path / "start")
    assert metadata["settings"]["channels"] == [8, 16]
    assert metadata["training"]["fields"] == 1 and metadata["training"]["laps"] == 1
    assert metadata["data"]["depth"] == 1.0


def test_no_diffusion_lap_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--laps", "0", "--out", str(tmp_path / "out")])
    assert "--laps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_depth_that_is_not_positive_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--depth", "0", "--out", str(tmp_path / "out")])
    assert "--depth must be positive, not 0.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_smooth_start_reaches_em_and_is_recorded(tmp_path, monkeypatch):
    starts, recipe_learn = [], recipe.learn

    def learn(*args, start=None, **kwargs):
        starts.append(start)
        return recipe_learn(*args, start=start, **kwargs)

    monkeypatch.setattr(recipe, "learn", learn)
    recipe.main(
        ["--out", str(tmp_path / "out"), "--frame", "16", "--channels", "8,16"]
        + ["--fields", "1", "--blank", "1", "--stamp-arcsec", "1.5", "--device", "cpu"]
        + ["--start-fwhm", "0.3", "--gaussian-rank", "4", "--gaussian-laps", "1"]
        + ["--laps", "1", "--train-steps", "2", "--sampler-steps", "2"]
    )
    (start,) = starts
    assert start.shape == (len(recipe.BANDS), 16, 16)
    # bumps of 0.3" = 5 pixels FWHM on a grid of 1.5 * 5 / 2.355 = 3.2 pixels: 5 x 5 per band
    assert start.rank == len(recipe.BANDS) * 5 * 5
    metadata = json.loads((tmp_path / "out" / "priors.json").read_text())["metadata"]
    assert metadata["settings"]["start_fwhm_arcsec"] == 0.3
    assert metadata["training"]["gaussian_rank"] == 4


def test_deeper_fields_have_the_noise_of_the_longer_exposure():
    # Sky and read noise both grow as the square root of the exposure, the signal as the
    # exposure: 16 times the exposure is 4 times the noise in data units, 1/4 per unit flux.
    # (The residual background, set in units of the noise, adds its own Poisson variance,
    # which does not scale so: a few per cent on the sparse HST sky.)
    shallow = recipe.simulate_fields(1, seed=5, blank=True, stamp_arcsec=1.5)[0]
    deep = recipe.simulate_fields(1, seed=5, blank=True, stamp_arcsec=1.5, depth=16)[0]
    for name, o1, o16 in zip(recipe.SURVEYS, shallow, deep):
        survey, survey16 = recipe.get_survey(name), recipe.deeper(name, 16)
        gain = [
            survey16.adu_per_njy(b16) / survey.adu_per_njy(b)
            for b, b16 in zip(survey.bands, survey16.bands)
        ]
        good = (o1.weight > 0) & (o16.weight > 0)  # masks and empty edges are the same
        sigma = [np.median(o16.weight[c][g] / o1.weight[c][g]) ** -0.5 for c, g in enumerate(good)]
        spread = [o16.data[c][g].std() / o1.data[c][g].std() for c, g in enumerate(good)]
        assert gain == pytest.approx([16] * len(gain))
        assert sigma == pytest.approx([4] * len(sigma), rel=0.03)
        assert spread == pytest.approx([4] * len(spread), rel=0.15)


def test_a_grown_stamp_keeps_the_network(tmp_path, capsys):
    """grow_stamp gives the same weights on a larger frame of the same scale, bands and PSF,
    and leaves the set it grew from as it was. A side the UNet cannot divide, or a smaller
    one, is refused, and the recipe refuses it before any work."""
    import torch

    frame = PriorFrame((len(recipe.BANDS), 16, 16), 0.06, recipe.BANDS, 0.07)
    start = new_priors(frame, channels=(8, 16), attention_levels=())
    grown = recipe.grow_stamp(start, 32)
    assert grown.galaxy_frame == PriorFrame((len(recipe.BANDS), 32, 32), 0.06, recipe.BANDS, 0.07)
    assert grown["galaxy"].shape == (len(recipe.BANDS), 32, 32)
    assert start["galaxy"].shape == (len(recipe.BANDS), 16, 16)
    before, after = start["galaxy"].state_dict(), grown["galaxy"].state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert grown["sky"] is start["sky"]
    with pytest.raises(recipe.InputError, match="divisible"):
        recipe.grow_stamp(start, 33)
    with pytest.raises(recipe.InputError, match="shrink"):
        recipe.grow_stamp(start, 8)
    start.save(tmp_path / "start")
    with pytest.raises(SystemExit):
        recipe.main(
            ["--init", str(tmp_path / "start"), "--frame", "33", "--out", str(tmp_path / "o")]
        )
    assert "--frame 33" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
