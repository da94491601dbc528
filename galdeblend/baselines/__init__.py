"""Baselines for comparison with the diffusion-prior method."""

from galdeblend.baselines.clvm import LinearCLVM
from galdeblend.baselines.pcpca import PCPCA

__all__ = ["LinearCLVM", "PCPCA"]
