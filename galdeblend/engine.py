"""The separation engine: generic multi-view source separation on plain tensors.

Useful beyond galaxies (any linear-Gaussian observation of sums of sources):

- :class:`GaussianPrior`, :class:`DiffusionPrior` and :func:`load_prior`;
- :func:`sample_prior`, :func:`sample_posterior` (joint MMPS over the sources);
- :func:`redraw_amplitudes` (per-plane amplitudes of chosen sources redrawn from the data);
- :func:`log_prob` (probability-flow ODE);
- :func:`em` with :class:`View` (Monte Carlo EM, joint or sequential).
"""

from galdeblend.amplitudes import redraw_amplitudes
from galdeblend.diffusion.backbones import MLP, UNet
from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.diffusion.logprob import log_prob
from galdeblend.diffusion.prior import DiffusionPrior, load_prior
from galdeblend.diffusion.samplers import sample_prior
from galdeblend.em import View, em
from galdeblend.posterior import sample_posterior

__all__ = [
    "GaussianPrior",
    "DiffusionPrior",
    "load_prior",
    "UNet",
    "MLP",
    "sample_prior",
    "sample_posterior",
    "redraw_amplitudes",
    "log_prob",
    "View",
    "em",
]
