"""galdeblend: galaxy deblending with diffusion priors learned from the observations.

The method is DDPRISM (Wagner-Carena, Akhmetzhanova & Erickson 2025, arXiv:2510.05205):
one diffusion prior per kind of source, learned by expectation-maximization from noisy,
blended, multi-resolution cutouts, and joint posterior sampling of every source.
"""

from galdeblend.errors import DataWarning, GaldeblendError, GaldeblendWarning, InputError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "GaldeblendError",
    "InputError",
    "GaldeblendWarning",
    "DataWarning",
]
