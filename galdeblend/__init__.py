"""galdeblend: galaxy deblending with diffusion priors learned from the observations.

The method is DDPRISM (Wagner-Carena, Akhmetzhanova & Erickson 2025, arXiv:2510.05205):
one diffusion prior per kind of source, learned by expectation-maximization from noisy,
blended, multi-resolution cutouts, and joint posterior sampling of every source.

The top-level API mirrors the ``galdeblend`` command:

- :func:`read_cutouts`: FITS files, HDUs, NDData/CCDData or ``(array, WCS)`` pairs to
  :class:`Observation` objects;
- :func:`deblend`: posterior samples of every galaxy and of the sky of one field, as a
  :class:`~galdeblend.results.DeblendResult`;
- :func:`write_posterior`, :func:`read_posterior`: the posterior FITS file;
- :func:`learn`: priors learned from cutouts alone (EM), a :class:`Priors` set;
- :func:`degrade`: a sharp observation seen with a broader PSF and pixel grid, for
  PSF-matched photometry across surveys.
"""

__version__ = "0.1.0"

# The submodules below read ``__version__``; it must be defined before they are imported.
# Bound after their submodules, so that ``galdeblend.deblend`` is the function.
from galdeblend.deblend import deblend  # noqa: E402
from galdeblend.degrade import degrade  # noqa: E402
from galdeblend.errors import DataWarning, GaldeblendError, GaldeblendWarning, InputError  # noqa: E402
from galdeblend.io import read_cutouts  # noqa: E402
from galdeblend.io.observation import Observation  # noqa: E402
from galdeblend.io.posterior_fits import read_posterior, write_posterior  # noqa: E402
from galdeblend.learn import learn  # noqa: E402
from galdeblend.priors import Priors  # noqa: E402

__all__ = [
    "__version__",
    "read_cutouts",
    "deblend",
    "learn",
    "degrade",
    "Priors",
    "write_posterior",
    "read_posterior",
    "Observation",
    "GaldeblendError",
    "InputError",
    "GaldeblendWarning",
    "DataWarning",
]
