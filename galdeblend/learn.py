"""Learn galaxy and sky priors from cutouts alone (EM on the astronomical scenes).

Every field (one or several observations of the same sky) becomes an engine
:class:`~galdeblend.em.View` of one observation: its galaxies, placed on the prior's
model frame, and one sky instance per observation band. Blank-sky fields give views
of sky alone. :func:`galdeblend.em.em` then learns both kinds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from astropy.coordinates import SkyCoord

from galdeblend.diffusion.backbones import UNet
from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.diffusion.prior import DiffusionPrior
from galdeblend.em import View, em
from galdeblend.errors import InputError
from galdeblend.io.observation import Observation
from galdeblend.priors import Priors
from galdeblend.scene import SKY_GRID, PriorFrame, build_problem, place_instances

__all__ = ["field_view", "new_priors", "smooth_start", "learn"]


def new_priors(
    galaxy_frame: PriorFrame,
    *,
    channels: Sequence[int] = (32, 64, 128),
    attention_levels: Sequence[int] = (2,),
    sigma_min: float = 1e-2,
    sigma_max: float = 30.0,
    sky_grid: int = SKY_GRID,
    seed: int = 0,
) -> Priors:
    """Untrained priors: a U-Net diffusion prior for galaxies and a Gaussian sky on a
    ``(1, sky_grid, sky_grid)`` grid of nodes over each observation band."""
    torch.manual_seed(seed)
    C = galaxy_frame.shape[0]
    backbone = UNet(C, channels=tuple(channels), attention_levels=tuple(attention_levels))
    galaxy = DiffusionPrior(
        backbone, shape=galaxy_frame.shape, sigma_min=sigma_min, sigma_max=sigma_max
    )
    sky = GaussianPrior(
        torch.zeros(1, sky_grid, sky_grid), 1.0, sigma_min=sigma_min, sigma_max=sigma_max
    )
    return Priors({"galaxy": galaxy, "sky": sky}, galaxy_frame)


def smooth_start(priors: Priors, fwhm: float) -> GaussianPrior:
    """A galaxy EM start for :func:`learn` smooth on ``fwhm`` arcsec
    (:meth:`GaussianPrior.smooth` on the galaxy frame, with the galaxy prior's noise range)."""
    frame, schedule = priors.galaxy_frame, priors["galaxy"].schedule
    return GaussianPrior.smooth(
        frame.shape,
        fwhm / frame.pixel_scale,
        sigma_min=schedule.sigma_min,
        sigma_max=schedule.sigma_max,
    )


def field_view(
    observations: Sequence[Observation],
    galaxy_frame: PriorFrame,
    *,
    positions: SkyCoord | None = None,
    blank: bool = False,
    sky_grid: int = SKY_GRID,
    name: str = "field",
) -> View:
    """The engine view of one field: ``y`` of shape ``(1, N)`` and one operator per instance
    (the sky on a ``sky_grid x sky_grid`` grid)."""
    if blank:
        positions = SkyCoord([], [], unit="deg")
    instances = place_instances(observations, galaxy_frame, positions=positions, sky_grid=sky_grid)
    problem = build_problem(observations, instances)
    return View(
        problem.y.float()[None],
        problem.noise_variance.float()[None],
        [inst.kind for inst in instances],
        [A.to(torch.float32) for A in problem.operators],
        name=name,
    )


def learn(
    fields: Sequence[Sequence[Observation]],
    *,
    blank: Sequence[Sequence[Observation]] = (),
    priors: Priors | None = None,
    galaxy_frame: PriorFrame | None = None,
    laps: int = 4,
    gaussian_laps: int = 3,
    algorithm: str = "joint",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    train: dict | None = None,
    sampling: dict | None = None,
    gaussian_rank: int = 16,
    start: GaussianPrior | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Priors:
    """Learn priors for galaxies and sky from observations alone (DDPRISM EM).

    Parameters
    ----------
    fields : sequence of sequences of Observation
        Each entry: the observations of one field (galaxies are detected in it).
    blank : sequence of sequences of Observation
        Blank-sky fields (sky only). With ``algorithm="sequential"`` the sky is
        learned from them first and then frozen (DDPRISM Algorithm 2).
    priors : Priors, optional
        Starting priors (default: :func:`new_priors` on ``galaxy_frame``).
    laps, gaussian_laps, algorithm, checkpoint_dir, resume, train, sampling, seed
        See :func:`galdeblend.em.em`.
    gaussian_rank : int
        Rank of the Gaussian covariances (the galaxy initialization and the sky).
    start : GaussianPrior, optional
        The galaxy prior of the first Gaussian lap's E-step (default ``N(0, I)``), e.g.
        :func:`smooth_start` at the coarsest band's resolution.
    device : str or torch.device, optional
        Where the E- and M-steps run (default: ``cuda`` when available). The scenes are
        built on the CPU, and the learned priors are returned on the CPU.

    Returns
    -------
    Priors
    """
    if priors is None:
        if galaxy_frame is None:
            raise InputError("learn: give priors= or galaxy_frame=")
        priors = new_priors(galaxy_frame, seed=seed)
    if not fields and not blank:
        raise InputError("learn: no fields to learn from")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    frame, grid = priors.galaxy_frame, priors["sky"].shape[-1]
    views = [field_view(f, frame, sky_grid=grid, name=f"field {i}") for i, f in enumerate(fields)]
    views += [
        field_view(f, frame, blank=True, sky_grid=grid, name=f"blank {i}")
        for i, f in enumerate(blank)
    ]
    sampling = {"steps": 16, "sampler": "ddim", **(sampling or {})}
    learned = em(
        [view.to(device) for view in views],
        {kind: prior.to(device) for kind, prior in priors.kinds.items()},
        laps=laps,
        gaussian_laps=gaussian_laps,
        algorithm=algorithm,
        order=["sky", "galaxy"] if algorithm == "sequential" else None,
        gaussian_rank=gaussian_rank,
        init={"galaxy": start} if start is not None else None,
        train=train,
        sampling=sampling,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        seed=seed,
        progress=progress,
    )
    metadata = {
        **priors.metadata,
        "training": {
            "fields": len(fields),
            "blank_fields": len(blank),
            "laps": laps,
            "gaussian_laps": gaussian_laps,
            "gaussian_rank": gaussian_rank,
            "algorithm": algorithm,
            "seed": seed,
            "train": train or {},
            "sampling": sampling,
            "inputs": sorted({o.source for f in list(fields) + list(blank) for o in f}),
        },
    }
    return Priors({kind: prior.cpu() for kind, prior in learned.items()}, frame, metadata)
