"""Packaging invariants: version, the README/CI test command, the io/ boundary for FITS."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import galdeblend

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "galdeblend"


def fits_imports(source: str) -> list[int]:
    """Line numbers of the statements in ``source`` that import :mod:`astropy.io.fits`.

    Covers ``import astropy.io.fits``, ``from astropy.io import fits``,
    ``from astropy.io.fits import ...`` and ``from astropy import io``.
    """
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            if any(name.split(".")[:3] == ["astropy", "io", "fits"] for name in names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported = {alias.name for alias in node.names}
            if (
                node.module == "astropy.io.fits"
                or node.module.startswith("astropy.io.fits.")
                or (node.module == "astropy.io" and ("fits" in imported or "*" in imported))
                or (node.module == "astropy" and ("io" in imported or "*" in imported))
            ):
                lines.append(node.lineno)
    return lines


def test_version_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == "galdeblend"
    assert galdeblend.__version__ == project["version"] == "0.1.0"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import astropy.io.fits", [1]),
        ("import astropy.io.fits as pf", [1]),
        ("x = 1\nfrom astropy.io import fits", [2]),
        ("from astropy.io.fits import getdata", [1]),
        ("from astropy.io.fits.hdu import ImageHDU", [1]),
        ("from astropy import io", [1]),
        ("def f():\n    from astropy.io import fits\n    return fits", [2]),
        ("from astropy.io import ascii", []),
        ("from astropy.wcs import WCS\nimport astropy.units as u", []),
        ("from .fits import read", []),
    ],
)
def test_fits_import_detector(source, expected):
    assert fits_imports(source) == expected


def test_astropy_io_fits_only_in_io_package():
    sources = sorted(PACKAGE_DIR.rglob("*.py"))
    assert PACKAGE_DIR / "__init__.py" in sources
    offenders = []
    for path in sources:
        relative = path.relative_to(PACKAGE_DIR)
        if relative.parts[0] == "io":
            continue
        for line in fits_imports(path.read_text(encoding="utf-8")):
            offenders.append(f"galdeblend/{relative.as_posix()}:{line}")
    assert not offenders, f"astropy.io.fits imported outside galdeblend/io: {offenders}"


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.rst").read_text(encoding="utf-8")
    commands = [
        line.strip() for line in readme.splitlines() if re.search(r"\bpython -m pytest\b", line)
    ]
    assert len(commands) == 1, f"README.rst must give exactly one test command, found {commands}"
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[0] in ci_lines


IMPORT_EACH_MODULE = """
import importlib, pkgutil, sys
import galdeblend
names = [m.name for m in pkgutil.walk_packages(galdeblend.__path__, "galdeblend.")
         if not m.name.endswith("__main__")]
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "galdeblend" or m.startswith("galdeblend.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as error:
        # an optional third-party package missing is fine; a galdeblend name is not
        if (error.name or "").startswith("galdeblend") or "partially initialized" in str(error):
            failed.append(f"{name}: {error}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first():
    """Each module imports in a fresh package state, whatever is imported before it (an
    import cycle fails only when its second module is the first one imported)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_MODULE], capture_output=True, text=True, check=True
    )
    count, *failed = done.stdout.strip().split("\n")
    assert int(count) > 20
    assert [line for line in failed if line] == []
