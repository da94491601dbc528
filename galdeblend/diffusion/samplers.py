"""Samplers for variance-exploding diffusion.

Every sampler takes a *denoiser* ``d(x_t, sigma_t)``, ``(B, *shape)`` and ``(B,)`` to
``(B, *shape)``: a prior's own denoiser, or the joint MMPS posterior denoiser of
:mod:`galdeblend.posterior`, so that prior and posterior sampling share one code path.

- DDIM (Song et al. 2021), deterministic, in VE form:
  ``x_s = x_hat + (sigma_s / sigma_t) (x_t - x_hat)``.
- Predictor-corrector (Song et al. 2021; Rozet et al. 2024): a DDIM predictor
  followed by ``corrections`` Langevin steps
  ``x <- x + tau (x_hat - x) + sqrt(2 tau) sigma_s eps``, i.e. step size
  ``tau sigma_s^2`` along the score ``(x_hat - x) / sigma_s^2``.

Both end with a final denoising at ``t = 0`` (``sigma_min``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from galdeblend.diffusion.schedule import VESchedule

__all__ = ["sample", "sample_prior", "SAMPLERS"]

Denoiser = Callable[[Tensor, Tensor], Tensor]
SAMPLERS = ("pc", "ddim")


def sample(
    denoise: Denoiser,
    schedule: VESchedule,
    shape: tuple[int, ...],
    *,
    sampler: str = "pc",
    steps: int = 64,
    corrections: int = 1,
    tau: float = 0.1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Draw samples by integrating from ``t = 1`` to ``t = 0``.

    Parameters
    ----------
    denoise : callable
        ``d(x_t, sigma_t)`` on ``(B, *event)`` and ``(B,)``.
    schedule : VESchedule
        Noise levels.
    shape : tuple of int
        ``(B, *event)`` of the state.
    sampler : {"pc", "ddim"}
        Predictor-corrector or plain DDIM.
    steps : int
        Number of predictor steps.
    corrections, tau : int, float
        Langevin corrections per step and their relative step size (``pc`` only).
    generator : torch.Generator, optional
        Source of the initial noise and the Langevin noise.

    Returns
    -------
    Tensor, shape ``(B, *event)``
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    def noise() -> Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    B = shape[0]
    sigmas = schedule.sigma(schedule.time_grid(steps, dtype=torch.float64)).tolist()
    x_t = sigmas[0] * noise()
    for sigma_t, sigma_s in tqdm(
        zip(sigmas[:-1], sigmas[1:]),
        total=steps,
        disable=not progress,
        desc="sampling",
        leave=False,
    ):
        x_hat = denoise(x_t, x_t.new_full((B,), sigma_t))
        x_t = x_hat + (sigma_s / sigma_t) * (x_t - x_hat)
        if sampler == "pc":
            for _ in range(corrections):
                x_hat = denoise(x_t, x_t.new_full((B,), sigma_s))
                x_t = x_t + tau * (x_hat - x_t) + math.sqrt(2 * tau) * sigma_s * noise()
    return denoise(x_t, x_t.new_full((B,), sigmas[-1]))


@torch.no_grad()
def sample_prior(
    prior,
    n: int,
    *,
    steps: int = 64,
    sampler: str = "pc",
    corrections: int = 1,
    tau: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Tensor:
    """Draw ``n`` samples ``(n, *prior.shape)`` from a prior by diffusion sampling.

    Works in batches of ``batch_size`` so that memory stays bounded.
    """
    device = device or _device_of(prior)
    generator = torch.Generator(device).manual_seed(seed)
    chunks = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        chunks.append(
            sample(
                prior,
                prior.schedule,
                (b, *prior.shape),
                sampler=sampler,
                steps=steps,
                corrections=corrections,
                tau=tau,
                generator=generator,
                device=device,
                progress=progress,
            )
        )
    return torch.cat(chunks)


def _device_of(module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")
