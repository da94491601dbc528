"""Deblend a field: place sources, sample their joint posterior, return a result."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from astropy.coordinates import SkyCoord
from astropy.table import Table

import galdeblend
from galdeblend.amplitudes import redraw_amplitudes
from galdeblend.diffusion.logprob import log_prob as _log_prob
from galdeblend.diffusion.prior import DiffusionPrior
from galdeblend.errors import InputError
from galdeblend.io.observation import Observation
from galdeblend.posterior import sample_posterior
from galdeblend.priors import Priors, default_ensemble, load_ensemble
from galdeblend.results import DeblendResult, InstanceResult
from galdeblend.scene import (
    build_problem,
    catalog_positions,
    detection_options,
    in_footprint,
    place_instances,
)

__all__ = ["deblend", "ensemble_counts"]

PriorSpec = Priors | str | os.PathLike | None


def ensemble_counts(n_samples: int, n_sets: int) -> list[int]:
    """Posterior samples drawn with each of ``n_sets`` prior sets: ``n_samples`` shared as
    evenly as possible, the first sets taking one more where it does not divide (so with
    fewer samples than sets, the last sets draw none)."""
    if n_samples < 1:
        raise InputError(f"n_samples must be at least 1, got {n_samples}")
    return [n_samples // n_sets + (k < n_samples % n_sets) for k in range(n_sets)]


def deblend(
    observations: Sequence[Observation],
    priors: PriorSpec | Sequence[PriorSpec] = None,
    *,
    catalog: Table | str | SkyCoord | None = None,
    n_samples: int = 16,
    steps: int = 64,
    sampler: str = "pc",
    corrections: int = 1,
    tau: float = 0.1,
    cg_iterations: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    log_prob_steps: int = 32,
    device: str | torch.device | None = None,
    fast: bool = False,
    amplitude_width: float = 1.0,
    detection: dict | None = None,
    progress: bool = True,
) -> DeblendResult:
    """Posterior samples of every galaxy and of the sky in one field.

    Parameters
    ----------
    observations : sequence of Observation
        One or several observations of the same field (e.g. HSC and HST cutouts).
    priors : Priors or path, or a sequence of them, optional
        Default: the ensemble of the prior sets shipped with galdeblend
        (:func:`~galdeblend.priors.default_ensemble`). Several prior sets on one galaxy
        frame (e.g. learned by different EM runs) make an ensemble: each draws its share
        of the ``n_samples`` (:func:`~galdeblend.deblend.ensemble_counts`) with the same
        ``seed``, and the result pools them, so that the posterior also carries how much
        the learned priors disagree. Each instance's ``log_prob`` is then that of the
        equal-weight mixture of the sets' priors.
    catalog : Table, path or SkyCoord, optional
        Galaxy positions (RA/Dec). Default: detected with photutils.
    n_samples : int
        Posterior samples per source (in all, over the prior sets of an ensemble).
    steps, sampler, corrections, tau, cg_iterations
        Sampler settings (see :func:`galdeblend.engine.sample_posterior`). Three CG
        iterations (the paper uses one) fit the quieter bands of a multi-survey field
        better, for about 1.8 times the time (figures in the validation docs).
    seed : int
    batch_size : int
        Posterior samples drawn at once (bounds memory).
    log_prob_steps : int
        ODE steps for ``log p`` of each posterior mean; 0 skips it.
    device : str, optional
        ``"cuda"`` when available, else ``"cpu"``.
    fast : bool
        Run the diffusion priors' networks in bfloat16 autocast and channels-last (see
        :meth:`~galdeblend.engine.DiffusionPrior.accelerate`; the likelihood and the
        conjugate gradients stay in float32 or higher). Mostly useful on GPUs.
    amplitude_width : float
        After sampling, each galaxy's amplitude per band is redrawn from the data given
        its sampled shape (:mod:`galdeblend.amplitudes`), with a Gaussian prior of this
        width around the sampled amplitude; ``inf`` for a flat prior, 0 to keep the
        diffusion samples as they are.
    detection : dict, optional
        Options of :func:`galdeblend.scene.detect_sources` (``max_sources``,
        ``min_smoothing``, ``min_prominence``, ...), used when no ``catalog`` is given.
    progress : bool

    Returns
    -------
    DeblendResult
    """
    if not amplitude_width >= 0:
        raise InputError(
            f"amplitude_width must be >= 0 (0: no amplitude step), got {amplitude_width}"
        )
    detection = detection_options(detection or {})
    if priors is None:
        priors = default_ensemble()
    prior_sets = load_ensemble(priors if isinstance(priors, (list, tuple)) else [priors])
    counts = ensemble_counts(n_samples, len(prior_sets))
    first = prior_sets[0]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    observations = list(observations)
    positions = None
    if catalog is not None:
        positions = catalog if isinstance(catalog, SkyCoord) else catalog_positions(catalog)
        positions = SkyCoord([positions]) if positions.isscalar else positions
        # A catalog may cover many fields: keep the galaxies that fall on this one.
        seen = np.zeros(len(positions), dtype=bool)
        for obs in observations:
            seen |= in_footprint(positions, obs)
        positions = positions[seen]
    instances = place_instances(
        observations,
        first.galaxy_frame,
        positions=positions,
        sky_grid=first["sky"].shape[-1],
        **detection,
    )
    problem = build_problem(observations, instances)
    dtype = torch.float32
    operators = [A.to(device) for A in problem.operators]
    y = problem.y.to(device, dtype)[None]
    noise_variance = problem.noise_variance.to(device, dtype)[None]
    set_priors = []  # per prior set, each instance's prior
    drawn = []  # per prior set, each instance's samples (n_k, *shape)
    for prior_set, n_k in zip(prior_sets, counts):
        inst_priors = [prior_set[inst.kind].to(device) for inst in instances]
        for kind in {inst.kind for inst in instances}:
            if isinstance(prior_set[kind], DiffusionPrior):
                prior_set[kind].accelerate(bf16=fast, channels_last=fast)
        set_priors.append(inst_priors)  # every set's priors enter the log-density
        if n_k == 0:
            continue
        samples = sample_posterior(
            inst_priors,
            y,
            operators,
            noise_variance,
            n_samples=n_k,
            sampler=sampler,
            steps=steps,
            corrections=corrections,
            tau=tau,
            cg_iterations=cg_iterations,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        drawn.append([x[0].double().cpu() for x in samples])
    # (n_samples, *shape) per instance, in prior units
    samples = [torch.cat(parts) for parts in zip(*drawn)]
    if amplitude_width > 0:
        samples = redraw_amplitudes(
            samples,
            problem.operators,
            problem.y,
            problem.noise_variance,
            [inst.kind == "galaxy" for inst in instances],
            width=amplitude_width,
            generator=torch.Generator().manual_seed(seed),
        )
    results = []
    model = torch.zeros_like(problem.y, dtype=torch.float64)
    for b, (inst, A, x) in enumerate(zip(instances, problem.operators, samples)):
        mean = x.mean(0, keepdim=True)
        model += A.forward(mean)[0]
        lp = float("nan")
        if log_prob_steps > 0:
            lps = [
                _log_prob(p[b], mean.to(device, dtype), steps=log_prob_steps, seed=seed)[0]
                for p in set_priors
            ]
            lp = float(torch.logsumexp(torch.stack(lps), 0)) - math.log(len(lps))
        scale = inst.scale.reshape(-1, 1, 1)
        results.append(
            InstanceResult(
                inst.id, inst.kind, inst.frame, x.numpy() * scale, inst.center, inst.observation, lp
            )
        )
    models = [m[0].numpy() for m in problem.split(model[None])]
    provenance = {
        "version": galdeblend.__version__,
        "priors": " + ".join(p.name for p in prior_sets),
        "sampler": sampler,
        "steps": steps,
        "corrections": corrections,
        "tau": tau,
        "cg_iterations": cg_iterations,
        "n_samples": n_samples,
        "ensemble_samples": counts,
        "seed": seed,
        "fast": fast,
        "amplitude_width": amplitude_width,
        "detection": "catalog" if catalog is not None else detection,
        "inputs": [o.source for o in observations],
    }
    return DeblendResult(observations, results, models, provenance)
