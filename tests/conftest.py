"""Shared test configuration.

Pytest settings (markers, default ``-m "not slow"``) live in ``setup.cfg``. Here: one torch
thread per test process (the suite runs with ``pytest -n 2`` on two cores), the location of
the survey data used by the real-data tests, and two tiny simulated blends deblended once for
the tests of ``validate`` and of ``benchmarks/light_budget.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared survey data folder (see its README.md).

    ``$GALDEBLEND_TEST_DATA`` if set, otherwise ``shared/data`` beside the repository. When it
    is missing the test is skipped, except under CI (``CI=true``), where that is an error.
    """
    path = Path(os.environ.get("GALDEBLEND_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        message = f"survey test data not found at {path} (set GALDEBLEND_TEST_DATA)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_deblends(tmp_path_factory) -> tuple[Path, Path]:
    """``(SIMDIR, RESULTSDIR)``: two simulated HSC blends (5.4", seed 3) and their posteriors
    from ``galdeblend run`` with an untrained tiny prior, 2 samples and 2 sampler steps."""
    from galdeblend.cli import main
    from galdeblend.learn import new_priors
    from galdeblend.scene import PriorFrame
    from galdeblend.simulate import simulate_dataset

    prior = tmp_path_factory.mktemp("prior")
    frame = PriorFrame((5, 16, 16), 0.1, ("g", "r", "i", "z", "y"), 0.3)
    new_priors(frame, channels=(8, 16), attention_levels=(1,)).save(prior)
    simdir = tmp_path_factory.mktemp("sims")
    manifest = simulate_dataset(
        simdir, surveys=("hsc",), n_blends=2, n_sky=0, seed=3, stamp_arcsec=5.4, progress=False
    )
    cutouts = [str(simdir / s["cutouts"]["hsc"]) for s in manifest["scenes"]]
    results = tmp_path_factory.mktemp("results")
    argv = ["run", *cutouts, "--prior", str(prior), "--samples", "2", "--steps", "2"]
    assert main([*argv, "--out", str(results), "-q"]) == 0
    return simdir, results
