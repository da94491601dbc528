"""Baselines for comparison with the diffusion-prior method."""

from galdeblend.baselines.pcpca import PCPCA

__all__ = ["PCPCA"]
