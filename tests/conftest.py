"""Shared test configuration.

Pytest settings (markers, default ``-m "not slow"``) live in ``setup.cfg``. Here: one torch
thread per test process (the suite runs with ``pytest -n 2`` on two cores) and the location of
the survey data used by the real-data tests.
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
