"""Posterior calibration when the prior is right: draws from the prior, deblended.

Simulation-based calibration of the posterior sampler alone. The geometry is a simulated
HSC (g, r, i, z, y) + HST F814W blank field (its pixel grids, PSFs, masks and noise
variance) with ``--galaxies`` galaxy instances on the corners of a regular polygon of side
``--separation`` (default: two galaxies 0.6" apart) and the sky instances of ``galdeblend
run``. For each of ``--fields`` draws, the galaxies and the sky are sampled from the priors
themselves, pushed through the forward operators of the scene, and noise of the field's
variance is added; the posterior is then sampled with the same priors and the sampler
settings of ``galdeblend run`` (its amplitude step included unless ``--amplitude-width
0``). The script prints the fraction of the true total fluxes
(per galaxy and band) and of the true galaxy pixels inside the central posterior intervals
at several levels. An exact posterior sampler gives the nominal levels (within the
binomial error printed beside them); the galsim validation (docs/validation.rst) adds on top
of this whatever the prior gets wrong about real galaxies.

Usage::

    python benchmarks/calibration.py                        # shipped priors
    python benchmarks/calibration.py --prior DIR --samples 32 --steps 64
    python benchmarks/calibration.py --galaxies 4 --separation 0.6   # a crowded blend
    python benchmarks/calibration.py --sampler ddim --steps 16 --cg-iterations 1 \
        --amplitude-width 0                                  # the EM recipe's E-step
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from astropy import units as u

from galdeblend.allocator import retain_freed_memory
from galdeblend.amplitudes import redraw_amplitudes
from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.engine import sample_posterior, sample_prior
from galdeblend.metrics import coverage
from galdeblend.priors import Priors
from galdeblend.scene import build_problem, place_instances
from galdeblend.simulate import simulate_scene

LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95)


def draw(prior, n: int, *, seed: int, steps: int) -> torch.Tensor:
    """``n`` samples ``(n, *shape)`` of a prior (exact for a Gaussian)."""
    if isinstance(prior, GaussianPrior):
        return prior.sample(n, seed=seed).float()
    return sample_prior(prior, n, steps=steps, seed=seed)


def main() -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prior", default=None, help="prior folder (default: shipped)")
    parser.add_argument("--fields", type=int, default=24, help="independent draws")
    parser.add_argument("--samples", type=int, default=32, help="posterior samples per draw")
    parser.add_argument("--steps", type=int, default=32, help="posterior sampler steps")
    parser.add_argument(
        "--sampler", choices=("pc", "ddim"), default="pc", help="posterior sampler (as run)"
    )
    parser.add_argument(
        "--cg-iterations", type=int, default=3, help="CG iterations (as galdeblend run)"
    )
    parser.add_argument(
        "--amplitude-width",
        type=float,
        default=1.0,
        help="amplitude step after sampling (as galdeblend run; 0: the sampler alone)",
    )
    parser.add_argument("--prior-steps", type=int, default=64, help="steps of the truth draws")
    parser.add_argument("--snr", type=float, default=10.0, help="galaxy peak in noise sigmas")
    parser.add_argument("--galaxies", type=int, default=2, help="galaxy instances")
    parser.add_argument(
        "--separation", type=float, default=0.6, help="distance of neighbours, arcsec"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    priors = Priors.load(args.prior)
    observations = simulate_scene(
        ("hsc", "hst"), seed=args.seed, blank=True, stamp_arcsec=4.0
    ).observations()
    center = observations[0].wcs.celestial.pixel_to_world(
        *(np.array(observations[0].shape[:0:-1]) - 1) / 2
    )
    # Walk the polygon's sides from the centre: the first neighbour lies east of it.
    turns = 2 * np.pi * np.arange(args.galaxies - 1) / args.galaxies
    steps = args.separation * np.stack([np.cos(turns), np.sin(turns)], 1)
    corners = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    positions = center.spherical_offsets_by(corners[:, 0] * u.arcsec, corners[:, 1] * u.arcsec)
    instances = place_instances(
        observations, priors.galaxy_frame, positions=positions, sky_grid=priors["sky"].shape[-1]
    )
    # A blank field puts the scale at 3 sigma: raise the galaxies to the requested peak.
    instances = [
        dataclasses.replace(i, scale=i.scale * args.snr / 3) if i.kind == "galaxy" else i
        for i in instances
    ]
    problem = build_problem(observations, instances)
    inst_priors = [priors[i.kind] for i in instances]

    start = time.time()
    truth = [
        draw(p, args.fields, seed=args.seed + 1 + k, steps=args.prior_steps)
        for k, p in enumerate(inst_priors)
    ]
    noise = torch.randn(args.fields, problem.y.numel(), dtype=torch.float64)
    with torch.no_grad():
        y = sum(A.forward(x.double()) for A, x in zip(problem.operators, truth))
    y = (y + noise * problem.noise_variance.sqrt()).float()
    t_truth = time.time() - start
    samples = sample_posterior(
        inst_priors,
        y,
        problem.operators,
        problem.noise_variance.float()[None],
        n_samples=args.samples,
        sampler=args.sampler,
        steps=args.steps,
        cg_iterations=args.cg_iterations,
        seed=args.seed,
        progress=True,
    )
    if args.amplitude_width > 0:
        redraw = [i.kind == "galaxy" for i in instances]
        generator = torch.Generator().manual_seed(args.seed)
        fields = [
            redraw_amplitudes(
                [x[f] for x in samples],
                problem.operators,
                y[f].double(),
                problem.noise_variance,
                redraw,
                width=args.amplitude_width,
                generator=generator,
            )
            for f in range(args.fields)
        ]
        samples = [torch.stack([field[k] for field in fields]) for k in range(len(instances))]
    t_post = time.time() - start - t_truth

    galaxies = [k for k, i in enumerate(instances) if i.kind == "galaxy"]
    flux_draws = np.stack(
        [samples[k].double().sum(dim=(-2, -1)).numpy() for k in galaxies], axis=2
    )  # (fields, S, galaxies, C)
    flux_true = np.stack([truth[k].double().sum(dim=(-2, -1)).numpy() for k in galaxies], 1)
    pixel_draws = np.stack([samples[k].double().numpy() for k in galaxies], axis=2)
    pixel_true = np.stack([truth[k].double().numpy() for k in galaxies], axis=1)
    flux_cov = coverage(np.moveaxis(flux_draws, 1, 0), flux_true, LEVELS)
    pixel_cov = coverage(np.moveaxis(pixel_draws, 1, 0), pixel_true, LEVELS)
    n_flux = flux_true.size
    print(
        f"{args.fields} draws x {len(galaxies)} galaxies x {flux_true.shape[-1]} bands, "
        f"galaxy peak {args.snr:g} sigma, {args.samples} posterior samples, "
        f"{args.sampler} {args.steps} steps, {args.cg_iterations} CG iterations, amplitude width "
        f"{args.amplitude_width:g}; "
        f"truth {t_truth:.0f} s, posterior {t_post:.0f} s"
    )
    header = ("level", "flux coverage", "(binomial error if independent)", "pixel coverage")
    print(f"{header[0]:>6} {header[1]:>14} {header[2]:>32} {header[3]:>15}")
    for level in LEVELS:
        error = np.sqrt(level * (1 - level) / n_flux)
        print(f"{level:6.2f} {flux_cov[level]:14.3f} {error:32.3f} {pixel_cov[level]:15.3f}")


if __name__ == "__main__":
    main()
