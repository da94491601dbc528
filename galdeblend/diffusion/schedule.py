"""Variance-exploding noise schedule.

``x_t = x + sigma_t * eps`` with ``sigma(t) = exp(log s_min + t (log s_max - log s_min))``
for ``t`` in [0, 1] (Rozet et al. 2024; Wagner-Carena et al. 2025, Sec. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["VESchedule"]


@dataclass(frozen=True)
class VESchedule:
    """Log-linear variance-exploding schedule.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Noise levels at ``t = 0`` and ``t = 1``.
    """

    sigma_min: float = 1e-3
    sigma_max: float = 1e2

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                "VESchedule: need 0 < sigma_min < sigma_max, "
                f"got {self.sigma_min}, {self.sigma_max}"
            )

    def sigma(self, t: Tensor) -> Tensor:
        """Noise level ``sigma_t`` for times ``t`` (any shape)."""
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(log_min + t * (log_max - log_min))

    def time_grid(self, steps: int, *, dtype=torch.float32, device=None) -> Tensor:
        """``steps + 1`` times from 1 down to 0, evenly spaced (``(steps + 1,)``)."""
        return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype, device=device)
