"""The README's first command, run as a new user would: in a fresh virtual environment.

Slow (it installs torch and galdeblend from this checkout, then deblends the packaged example
with the shipped default priors) and it needs the package index: run it with ``-m slow``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_first_command() -> str:
    """The command of the README's first ``code-block`` (its indented lines joined)."""
    text = (REPO_ROOT / "README.rst").read_text()
    match = re.search(r"^\.\. code-block:: \w+\n\n((?:[ \t]+\S.*\n?)+)", text, flags=re.MULTILINE)
    assert match, "README.rst has no code-block"
    return " ".join(line.strip() for line in match.group(1).splitlines())


def test_readme_first_command_is_the_example_run():
    command = readme_first_command()
    assert "pip install" in command and "galdeblend run --example" in command
    assert re.search(r"--out\s+\S+", command)


@pytest.mark.slow
def test_readme_first_command_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    out = tmp_path / "results"
    command = re.sub(r"--out\s+\S+", f"--out {shlex.quote(str(out))}", readme_first_command())
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    start = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    posteriors = sorted(out.glob("*_posterior.fits"))
    assert len(posteriors) == 1, sorted(p.name for p in out.iterdir())
    with fits.open(posteriors[0]) as hdul:
        assert hdul[0].header["NOBS"] == 2  # the HSC and HST cutouts of the example field
        names = [hdu.name for hdu in hdul]
        assert any(name.startswith("SRC") and name.endswith("_SAMPLES") for name in names)
    assert (out / "summary.csv").is_file()
    print(f"README command finished in {time.monotonic() - start:.0f} s")
