"""FITS and astropy objects in, posterior FITS cubes out.

Nothing outside this package touches :mod:`astropy.io.fits`.
"""

from galdeblend.io.observation import Observation

__all__ = ["Observation"]
from galdeblend.io.readers import read_cutouts, stack_bands  # noqa: E402

__all__ += ["read_cutouts", "stack_bands"]
