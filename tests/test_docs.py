"""The Sphinx documentation builds without a single warning (slow: imports and renders all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "numpydoc", "furo"):
        pytest.importorskip(module, reason='install the docs extra: pip install ".[docs]"')
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "docs", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "api.html").read_text(encoding="utf-8")
    assert 'id="galdeblend.errors.InputError"' in api
    assert 'id="galdeblend.operators.Matrix"' in api
    for page in ("index", "getting_started", "method", "benchmarks", "performance"):
        assert (tmp_path / f"{page}.html").is_file()
