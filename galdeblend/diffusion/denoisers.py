"""Denoisers ``d(x_t, sigma_t) ~ E[x | x_t]`` for variance-exploding diffusion.

A denoiser is a :class:`torch.nn.Module` with an attribute ``shape`` (the event shape
of one source, e.g. ``(C, H, W)`` or ``(D,)``) whose ``forward(x_t, sigma_t)`` maps
``(B, *shape)`` and ``(B,)`` to ``(B, *shape)``. Under the Tweedie formula its
Jacobian times ``sigma_t**2`` is the posterior covariance ``Cov[x | x_t]``, which
is what the MMPS posterior denoiser (:mod:`galdeblend.posterior`) uses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EDMDenoiser"]


class EDMDenoiser(nn.Module):
    """Neural denoiser with EDM preconditioning (Karras et al. 2022).

    ``d(x_t, sigma) = c_skip x_t + c_out F(c_in x_t, c_noise)`` with
    ``c_skip = s_d^2 / (sigma^2 + s_d^2)``, ``c_out = sigma s_d / sqrt(sigma^2 + s_d^2)``,
    ``c_in = 1 / sqrt(sigma^2 + s_d^2)`` and ``c_noise = log(sigma) / 4``.

    Parameters
    ----------
    backbone : nn.Module
        ``F(x, c_noise)`` mapping ``(B, *shape)`` and ``(B,)`` to ``(B, *shape)``.
    shape : tuple of int
        Event shape of one source.
    sigma_data : float
        Typical standard deviation ``s_d`` of the data (1 for standardized data).

    Attributes
    ----------
    network_dtype : torch.dtype or None
        When set (e.g. ``torch.bfloat16``), ``F`` runs under :func:`torch.autocast` in
        that type; the preconditioning and the output stay in the input's type.
    channels_last : bool
        Feed image batches to ``F`` in the channels-last memory format.
    """

    def __init__(self, backbone: nn.Module, shape: tuple[int, ...], *, sigma_data: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.shape = tuple(int(s) for s in shape)
        self.sigma_data = float(sigma_data)
        self.network_dtype: torch.dtype | None = None
        self.channels_last = False

    def _coefficients(self, sigma_t: Tensor, ndim: int) -> tuple[Tensor, Tensor, Tensor]:
        s_d2 = self.sigma_data**2
        sigma = sigma_t.reshape(-1, *([1] * (ndim - 1)))
        norm = torch.sqrt(sigma**2 + s_d2)
        return s_d2 / norm**2, sigma * self.sigma_data / norm, 1.0 / norm

    def forward(self, x_t: Tensor, sigma_t: Tensor) -> Tensor:
        """Denoise ``x_t`` ``(B, *shape)`` at noise levels ``sigma_t`` ``(B,)``."""
        sigma_t = sigma_t.to(x_t.dtype).expand(x_t.shape[0])
        c_skip, c_out, c_in = self._coefficients(sigma_t, x_t.ndim)
        x_in = c_in * x_t
        if self.channels_last and x_in.ndim == 4:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            x_t.device.type,
            dtype=self.network_dtype or torch.bfloat16,
            enabled=self.network_dtype is not None,
        ):
            F = self.backbone(x_in, torch.log(sigma_t) / 4)
        return c_skip * x_t + c_out * F.to(x_t.dtype)

    def loss(
        self,
        x: Tensor,
        sigma_t: Tensor,
        *,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Weighted denoising loss per batch item, ``(B,)``.

        ``lambda(sigma) ||d(x + sigma eps, sigma) - x||^2 / dim`` with
        ``lambda = 1 / sigma^2 + 1 / s_d^2`` (``1/sigma^2 + 1`` for ``s_d = 1``), for the
        standard normal noise ``eps`` ``(B, *shape)``, drawn from ``generator`` when not given.
        """
        if eps is None:
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        sigma = sigma_t.reshape(-1, *([1] * (x.ndim - 1)))
        x_hat = self(x + sigma * eps, sigma_t)
        weight = 1.0 / sigma_t**2 + 1.0 / self.sigma_data**2
        return weight * (x_hat - x).square().flatten(1).mean(dim=1)
