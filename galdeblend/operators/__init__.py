"""Linear operators on batched tensors (forward and adjoint), see :mod:`.base`."""

from galdeblend.operators.base import (
    Adjoint,
    Compose,
    Interpolate,
    Stack,
    Downsample,
    Identity,
    LinearOperator,
    Mask,
    Matrix,
    Scale,
    Sum,
)

from galdeblend.operators.astro import Convolve, Resample, SelectBands, Shift
from galdeblend.operators.psf_matching import difference_kernel, relative_jacobian

__all__ = [
    "LinearOperator", "Identity", "Matrix", "Mask", "Downsample", "Scale", "Compose", "Sum",
    "Adjoint", "Stack", "Interpolate",
    "Convolve", "Resample", "Shift", "SelectBands", "difference_kernel", "relative_jacobian",
]
