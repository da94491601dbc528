"""Exceptions and warnings raised by galdeblend.

Every user-facing check raises :class:`InputError`, whose message names the file,
HDU or argument at fault and what was expected.
"""

from __future__ import annotations

__all__ = ["GaldeblendError", "InputError", "GaldeblendWarning", "DataWarning"]


class GaldeblendError(Exception):
    """Base class of every error raised on purpose by galdeblend."""


class InputError(GaldeblendError, ValueError):
    """Bad user input: a file, HDU, argument or array that cannot be used as given."""


class GaldeblendWarning(UserWarning):
    """Base class of the warnings galdeblend emits."""


class DataWarning(GaldeblendWarning):
    """Something in the data was repaired (masked pixels, a truncated PSF, ...)."""
