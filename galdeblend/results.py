"""What a deblend returns: posterior samples of every source instance of a cutout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.coordinates import SkyCoord

from galdeblend.frames import Frame
from galdeblend.io.observation import Observation

__all__ = ["InstanceResult", "DeblendResult"]


@dataclass
class InstanceResult:
    """Posterior of one source instance.

    Attributes
    ----------
    id : int
        Identifier, unique within the result.
    kind : str
        Source kind (``"galaxy"``, ``"sky"``, ...).
    frame : Frame
        The instance's model frame (shape ``(C, H, W)``, WCS, bands, model PSF).
    samples : ndarray, shape (n_samples, C, H, W)
        Posterior samples in the data's flux units per model pixel.
    center : SkyCoord or None
        Position of the instance (``None`` for a sky instance).
    observation : int or None
        For a sky instance, the index of the observation it belongs to.
    log_prob : float
        ``log p`` of the posterior mean under the kind's prior (nats), NaN if not computed.
    """

    id: int
    kind: str
    frame: Frame
    samples: np.ndarray
    center: SkyCoord | None = None
    observation: int | None = None
    log_prob: float = float("nan")

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean ``(C, H, W)``."""
        return self.samples.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Posterior standard deviation ``(C, H, W)`` (0 with one sample)."""
        return (
            self.samples.std(axis=0, ddof=1)
            if len(self.samples) > 1
            else np.zeros(self.samples.shape[1:])
        )

    def flux(self) -> tuple[np.ndarray, np.ndarray]:
        """Total flux per band: posterior mean and standard deviation, each ``(C,)``."""
        f = self.samples.sum(axis=(2, 3))
        return f.mean(axis=0), (f.std(axis=0, ddof=1) if len(f) > 1 else np.zeros(f.shape[1]))


@dataclass
class DeblendResult:
    """Posterior of every source of one cutout (one or several observations of a field).

    Attributes
    ----------
    observations : list of Observation
        The data that were deblended.
    instances : list of InstanceResult
    models : list of ndarray
        Per observation, the posterior-mean model ``sum_b A_ib mean_b`` ``(C_i, H_i, W_i)``.
    provenance : dict
        Version, prior identifiers, sampler settings, seed, input files.
    """

    observations: list[Observation]
    instances: list[InstanceResult]
    models: list[np.ndarray]
    provenance: dict = field(default_factory=dict)

    def residuals(self) -> list[np.ndarray]:
        """Per observation, data minus model, 0 at masked pixels ``(C_i, H_i, W_i)``."""
        return [np.where(o.mask, 0.0, o.data - m) for o, m in zip(self.observations, self.models)]

    @property
    def galaxies(self) -> list[InstanceResult]:
        return [i for i in self.instances if i.kind != "sky"]
