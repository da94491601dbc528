"""FITS and astropy objects in, posterior FITS cubes out.

Nothing outside this package touches :mod:`astropy.io.fits`.
"""

from galdeblend.io.observation import Observation

__all__ = ["Observation"]
from galdeblend.io.readers import read_cutouts, stack_bands  # noqa: E402

__all__ += ["read_cutouts", "stack_bands"]
__all__ += ["read_posterior", "write_posterior"]


def __getattr__(name: str):
    """Posterior FITS functions, imported on first use: they need galdeblend.frames and
    galdeblend.results, which themselves import this package."""
    if name in ("read_posterior", "write_posterior"):
        from galdeblend.io import posterior_fits

        return getattr(posterior_fits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
