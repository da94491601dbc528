"""Linear operators on batched tensors (forward and adjoint), see :mod:`.base`."""

from galdeblend.operators.astro import Convolve, Resample, SelectBands, Shift
from galdeblend.operators.base import (
    Adjoint,
    Compose,
    Downsample,
    Identity,
    Interpolate,
    LinearOperator,
    Mask,
    Matrix,
    Scale,
    Stack,
    Sum,
)
from galdeblend.operators.psf_matching import difference_kernel, relative_jacobian

__all__ = [
    "LinearOperator",
    "Identity",
    "Matrix",
    "Mask",
    "Downsample",
    "Scale",
    "Compose",
    "Sum",
    "Adjoint",
    "Stack",
    "Interpolate",
    "Convolve",
    "Resample",
    "Shift",
    "SelectBands",
    "difference_kernel",
    "relative_jacobian",
]
