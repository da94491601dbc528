"""Tests of :mod:`galdeblend.validate` and ``galdeblend validate`` on a tiny simulated set.

Two 32x32 HSC blends (:func:`galdeblend.simulate.simulate_dataset`) are deblended by
``galdeblend run`` with an untrained tiny prior and 2 sampler steps, then scored.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from galdeblend.cli import main
from galdeblend.errors import InputError
from galdeblend.io import read_posterior
from galdeblend.learn import new_priors
from galdeblend.scene import PriorFrame
from galdeblend.simulate import read_truth, simulate_dataset
from galdeblend.validate import LEVELS, flux_scores, score_blend, validate

TINY_FRAME = PriorFrame((5, 16, 16), 0.1, ("g", "r", "i", "z", "y"), 0.3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """(SIMDIR, RESULTSDIR): two simulated blends and their posteriors."""
    prior = tmp_path_factory.mktemp("prior")
    new_priors(TINY_FRAME, channels=(8, 16), attention_levels=(1,)).save(prior)
    simdir = tmp_path_factory.mktemp("sims")
    manifest = simulate_dataset(
        simdir, surveys=("hsc",), n_blends=2, n_sky=0, seed=3, stamp_arcsec=5.4, progress=False
    )
    cutouts = [str(simdir / s["cutouts"]["hsc"]) for s in manifest["scenes"]]
    results = tmp_path_factory.mktemp("results")
    argv = ["run", *cutouts, "--prior", str(prior), "--samples", "2", "--steps", "2"]
    assert main([*argv, "--out", str(results), "-q"]) == 0
    return simdir, results


def test_validate_writes_table_and_report(runs, capsys):
    simdir, results = runs
    assert main(["validate", str(simdir), str(results), "-q"]) == 0
    printed = capsys.readouterr().out
    report = results / "validation"
    with open(report / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"galdeblend", "photutils", "sep"}
    assert "| galdeblend | completeness |" in printed
    assert (report / "table.md").read_text() == printed
    for name in (
        "flux_error_vs_mag.png",
        "calibration.png",
        "blend_blend_0000.png",
        "blend_blend_0001.png",
    ):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = {r["metric"] for r in rows if r["method"] == "galdeblend"}
    assert {
        "|flux_error|",
        "completeness",
        "chi2_per_pixel",
        "coverage_0.68",
        "coverage_0.95",
        "|e error|",
        "|size error|",
    } <= metrics
    with open(report / "galaxies.csv") as f:
        galaxies = list(csv.DictReader(f))
    matched = [g for g in galaxies if g["matched"] == "True"]
    assert matched
    assert all(np.isfinite(float(g["flux_error"])) for g in matched)
    # every true galaxy of every blend appears once per method and band
    n_true = sum(
        s["n_galaxies"] for s in json.loads((simdir / "manifest.json").read_text())["scenes"]
    )
    assert len(galaxies) == 3 * 5 * n_true


def test_completeness_matches_galaxy_rows(runs, tmp_path):
    simdir, results = runs
    table = validate(simdir, results, outdir=tmp_path)
    with open(tmp_path / "galaxies.csv") as f:
        galaxies = [g for g in csv.DictReader(f) if g["band"] == "r"]
    for method in ("galdeblend", "photutils", "sep"):
        rows = [g for g in galaxies if g["method"] == method]
        fraction = np.mean([g["matched"] == "True" for g in rows])
        completeness = table[(table["method"] == method) & (table["metric"] == "completeness")]
        # 2 blends: the median of per-blend completeness brackets the pooled fraction
        assert completeness["low"][0] <= fraction + 1e-9
        assert fraction <= completeness["high"][0] + 1e-9


def test_exact_posterior_flux_scores_zero_error(runs):
    """Galaxies whose per-sample fluxes straddle the true flux of the nearest true galaxy."""
    simdir, results = runs
    result = read_posterior(results / "blend_0000_hsc_posterior.fits")
    truth = read_truth(simdir / "blend_0000_truth.fits")
    obs = result.observations[0]
    true_xy = np.stack([truth.galaxies["x_hsc"], truth.galaxies["y_hsc"]], axis=1)
    true_flux = truth.survey_galaxies["hsc"].sum(axis=(2, 3))  # (K, C)
    for gal in result.galaxies:
        xy = np.asarray(obs.wcs.world_to_pixel(gal.center), dtype=float)
        k = np.argmin(np.linalg.norm(true_xy - xy, axis=1))
        flux = np.zeros(gal.frame.shape[0])
        flux[[gal.frame.bands.index(b) for b in obs.bands]] = true_flux[k]
        _, h, w = gal.frame.shape
        scale = np.array([0.9, 1.1])[:, None, None, None]
        gal.samples = scale * np.broadcast_to(flux[:, None, None] / (h * w), gal.frame.shape)
    rows, blend_rows, _ = score_blend("blend_0000", result, truth, "hsc", baselines=())
    matched = [r for r in rows if r["matched"]]
    assert matched
    assert [r["flux_error"] for r in matched] == pytest.approx(np.zeros(len(matched)), abs=1e-9)
    assert all(r[f"inside_{level:g}"] for r in matched for level in LEVELS)
    assert blend_rows[0]["completeness"] == len(matched) / (5 * len(truth.galaxies))


def test_shape_errors_vanish_for_the_true_image(runs):
    from galdeblend.validate import _galaxy_rows

    simdir, _ = runs
    truth = read_truth(simdir / "blend_0000_truth.fits")
    images = truth.survey_galaxies["hsc"]
    matches = {k: (image.sum(axis=(1, 2))[None], image) for k, image in enumerate(images)}
    bands = ("g", "r", "i", "z", "y")
    rows = _galaxy_rows("b", "m", truth.galaxies, images, bands, "hsc", matches, 0.168)
    errors = np.array([[r["e1_error"], r["e2_error"], r["size_error"]] for r in rows])
    measured = np.isfinite(errors).all(axis=1)
    assert measured.mean() > 0.5  # hsm converges on most noiseless galaxies
    assert np.abs(errors[measured]).max() < 1e-9


def test_flux_scores_closed_form():
    samples = np.arange(1.0, 101.0)[:, None] * np.array([1.0, 2.0])  # (100, 2)
    error, inside = flux_scores(samples, np.array([50.5, 10.0]))
    assert error == pytest.approx([0.0, (101.0 - 10.0) / 10.0])
    assert inside.shape == (len(LEVELS), 2)
    assert inside[:, 0].all()  # the median is inside every central interval
    # band 1: samples 2, 4, ..., 200; the 2.5% quantile is 2 (1 + 0.025 * 99) = 6.95 < 10,
    # the 5% quantile 2 (1 + 0.05 * 99) = 11.9 > 10: only the 95% interval holds 10
    assert inside[:, 1].tolist() == [False, False, False, False, True]
    with pytest.raises(InputError, match="sample fluxes"):
        flux_scores(np.ones(3), np.ones(3))


def test_validate_errors(tmp_path):
    with pytest.raises(InputError, match="manifest.json not found"):
        validate(tmp_path, tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"scenes": []}))
    with pytest.raises(InputError, match="no blend .* has a posterior"):
        validate(tmp_path, tmp_path)
